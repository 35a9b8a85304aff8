"""The GPU probe (benchmarks/gpu_probe.py), run small on the CPU.

One ``--tiny`` run (ResNet-8 at 8 px, batch 8, two members, two processes) of every default
variant, with ``--profile``, in a subprocess as a GPU run is started; the tests read its JSON
and its printed table. The probe only runs once on a GPU, so what it records must already be
right here: every variant present, the baseline's own check exactly zero, the bfloat16
variants' small but not zero, the sums over processes and the goals made from the variants'
numbers, the profile's summary of a trace.
"""

import gzip
import json
import os
import subprocess
import sys

import pytest

from processes import ROOT, child_env

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_probe as gp  # noqa: E402

PROBE = os.path.join(ROOT, "benchmarks", "gpu_probe.py")


def _probe(tmp, *args: str) -> tuple[dict, str]:
  out = os.path.join(tmp, "probe.json")
  run = subprocess.run(
    [sys.executable, PROBE, "--tiny", "--out", out, *args],
    env=child_env(),
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  with open(out) as f:
    return json.load(f), run.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """The whole default list, with a budget that fits it, and the profile."""
  return _probe(str(tmp_path_factory.mktemp("probe")), "--profile", "--budget-s", "3000")


def test_every_default_variant_is_recorded(tiny):
  got, _ = tiny
  names = gp.default_variants(2, 2)
  assert list(got["variants"]) == names
  for name, r in got["variants"].items():
    if "cmdbuf" in name:  # XLA's GPU flags: recorded, not run
      assert r["status"] == "not applicable on cpu", name
    else:
      assert r["status"] == "ok", (name, r.get("error"), r.get("output_tail"))
      assert r["images_per_s"] > 0 and r["ms_per_step"] > 0 and r["compile_s"] >= 0
      assert r["runs"] == gp.Variant.parse(r.get("resolved", name)).runs
  machine = got["machine"]
  assert machine["platform"] == "cpu" and {"jax", "jaxlib", "python"} <= set(machine["versions"])
  assert got["probe"]["images"] == 70  # CIFAR-LT's class sizes at n_max 12, rho 3


def test_the_baseline_repeats_itself_exactly(tiny):
  """The baseline's check runs its own program again on the same batches: on the CPU the
  result is bit for bit the same, and so is every variant that runs that very program."""
  got, _ = tiny
  v = got["variants"]
  for name in ("f32-host-1", "f32-host-async2", "f32-host-1-procs2"):
    for key in ("loss_rel_diff", "update_rel_diff", "update_norm_rel_diff"):
      assert v[name][key] == 0.0, (name, key)
  assert v["f32-host-1"]["check_steps"] == 2


def test_float32_variants_compute_the_same_steps(tiny):
  """Other programs of the same float32 step: the same first loss, and the same update after
  two steps to float32 rounding."""
  v = tiny[0]["variants"]
  for name in ("f32-device-1", "f32-host-laxmap2", "f32-host-unrolled2", "f32-host-vmap2"):
    assert v[name]["loss_rel_diff"] < 1e-5, name
  for name in ("f32-device-1", "f32-host-laxmap2", "f32-host-unrolled2", "f32-host-vmap2"):
    assert v[name]["update_rel_diff"] < 1e-4, name


def test_bfloat16_differs_a_little_and_really_is_bfloat16(tiny):
  """bfloat16 activations move the first loss by about 1e-3 (8 bits of mantissa); zero would
  mean the step had not computed in bfloat16 at all."""
  v = tiny[0]["variants"]
  for name in ("bf16-host-1", "bf16-device-1", "bf16-device-laxmap2", "bf16-device-async2"):
    assert 1e-5 < v[name]["loss_rel_diff"] < 1e-2, name
    assert v[name]["update_norm_rel_diff"] < 1e-2, name
    assert v[name]["update_rel_diff"] < 0.5, name


def test_processes_are_summed_and_best_is_the_fastest_measured(tiny):
  v = tiny[0]["variants"]
  procs = v["f32-host-1-procs2"]
  assert len(procs["children"]) == 2 and procs["runs"] == 2
  assert procs["images_per_s"] == pytest.approx(sum(c["images_per_s"] for c in procs["children"]))
  assert procs["mem_fraction"] == 0.3
  plan = gp.default_variants(2, 2)
  before = plan[: plan.index("best1-procs2")]
  one_run = [n for n in before if v[n]["status"] == "ok" and gp.Variant.parse(n).members == 1]
  fastest = max(one_run, key=lambda n: v[n]["images_per_s"])
  assert v["best1-procs2"]["resolved"] == fastest + "-procs2"
  assert gp.Variant.parse(v["bestM-procs2"]["resolved"]).members == 2


def test_goals_name_the_closest_variant(tiny):
  got, _ = tiny
  v, goals = got["variants"], got["goals"]
  base = v["f32-host-1"]["images_per_s"]
  assert goals["baseline_images_per_s"] == base
  one = goals["one_run_2x"]
  assert one["target_images_per_s"] == 2 * base
  ok = {n: r for n, r in v.items() if r["status"] == "ok"}
  assert one["closest"] == max(
    (n for n in ok if ok[n]["runs"] == 1), key=lambda n: ok[n]["images_per_s"]
  )
  assert goals["twelve_runs_3x"]["met"] is None  # no twelve-run variant at M = 2
  t1 = goals["table1_10_minutes"]
  assert t1["target_images_per_s"] == pytest.approx(75_312)
  assert t1["closest"] == max(ok, key=lambda n: ok[n]["images_per_s"])
  assert t1["table1_minutes"] == pytest.approx(
    200 * 6 * (12_406 + 25_250) / t1["images_per_s"] / 60
  )
  assert t1["bound"]["achieved_tflops"] > 0


def test_the_table_and_the_profile(tiny):
  got, stdout = tiny
  assert "variant" in stdout and "images/s" in stdout and "x base" in stdout
  for name, r in got["variants"].items():
    assert any(line.startswith(name + " ") for line in stdout.splitlines()), name
  assert "goal one_run_2x:" in stdout
  prof = got["profile"]
  assert prof["of"] == got["goals"]["table1_10_minutes"]["closest"]
  assert prof["ops_from"] == "host" and prof["ops_per_step"] > 0 and prof["top_ops"]
  assert 0 < prof["busy_share_of_wall"]
  assert os.path.exists(os.path.join(prof["folder"], prof["trace_file"]))
  # The goal whose closest variant was profiled reads the trace; the others say they were not.
  bound = got["goals"]["table1_10_minutes"]["bound"]
  assert bound["profile"]["ops_per_step"] == prof["ops_per_step"] and bound["profile"]["reading"]
  assert got["variants"]["f32-host-1"]["speedup"] == 1.0


def test_the_budget_skips_what_does_not_fit(tmp_path):
  got, stdout = _probe(str(tmp_path), "--budget-s", "0", "--variants", "bf16-*,f32-device-1")
  v = got["variants"]
  assert v["f32-host-1"]["status"] == "ok"  # the baseline always runs
  assert set(v) == {"f32-host-1", "bf16-host-1", "bf16-device-1", "f32-device-1"} | {
    "bf16-device-vmap2",
    "bf16-device-laxmap2",
    "bf16-device-async2",
  }
  for name in set(v) - {"f32-host-1"}:
    assert v[name]["status"] == "skipped" and "budget" in v[name]["reason"], name
  assert "skipped: budget" in stdout


@pytest.mark.parametrize(
  "name",
  gp.default_variants(6, 3) + ["bf16-device-unrolled4-procs2-cmdbuf_off", "f32-device-async12"],
)
def test_variant_names_round_trip(name):
  assert gp.Variant.parse(name).name == name


@pytest.mark.parametrize(
  "name, part",
  [
    ("f16-host-1", "DTYPE"),
    ("f32-host-pmap2", "MEMBERS"),
    ("f32-host-vmap1", "M >= 2"),
    ("f32-host-1-procs1", "procs1"),
    ("f32-host-1-cudagraph", "cudagraph"),
    ("f32-host", "DTYPE"),
  ],
)
def test_bad_variant_names_are_refused_naming_the_part(name, part):
  with pytest.raises(ValueError, match=part):
    gp.Variant.parse(name)


def test_summary_of_a_gpu_trace(tmp_path):
  """The summary reads a device's rows as the profiler writes them for a GPU: kernels on the
  Stream rows, executables on XLA Modules, host events apart."""
  M = lambda pid, tid, kind, name: {"ph": "M", "pid": pid, "tid": tid, "name": kind,
                                    "args": {"name": name}}  # fmt: skip
  X = lambda tid, name, ts, dur, pid=1: {"ph": "X", "pid": pid, "tid": tid, "name": name,
                                          "ts": ts, "dur": dur}  # fmt: skip
  events = [
    M(1, 0, "process_name", "/device:GPU:0"),
    M(1, 1, "thread_name", "XLA Modules"),
    M(1, 2, "thread_name", "Stream #13(Compute)"),
    M(9, 0, "process_name", "/host:CPU"),
    M(9, 5, "thread_name", "python"),
    X(1, "jit_train_step", 0, 1000),
    X(1, "jit_train_step", 2000, 1000),
    X(2, "conv_kernel", 0, 300),
    X(2, "conv_kernel", 200, 300),  # overlaps the one before: busy time counted once
    X(2, "loop_fusion", 2000, 100),
    X(5, "$python frame", 0, 5000, pid=9),
  ]
  folder = tmp_path / "plugins" / "profile" / "run"
  folder.mkdir(parents=True)
  with gzip.open(folder / "host.trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  s = gp.summarise_trace(str(tmp_path), wall_s=0.004, steps=2)
  assert s["ops_from"] == "device" and s["ops_per_step"] == 1.5
  assert s["executables_per_step"] == 1.0
  assert s["busy_s"] == pytest.approx(600e-6)  # 0-500 and 2000-2100
  assert s["busy_share_of_wall"] == pytest.approx(0.15)
  assert [o["name"] for o in s["top_ops"]] == ["conv_kernel", "loop_fusion"]
  assert s["top_ops"][0]["total_ms"] == pytest.approx(0.6) and s["top_ops"][0]["count"] == 2


def test_flag_variants_run_in_a_child_that_drops_unknown_optional_flags(tmp_path, monkeypatch):
  """The path a GPU takes for ``cmdbuf_*``: a child process with the flags in XLA_FLAGS,
  run again without the optional flags when XLA refuses one as unknown. XLA:CPU parses the
  GPU flags (and ignores them), so the path runs here; a flag no XLA knows stands in for
  one that a newer XLA dropped."""
  flags, optional = gp.XLA_SETTINGS["cmdbuf_all"]
  monkeypatch.setitem(gp.XLA_SETTINGS, "cmdbuf_all", (flags, optional + ("--xla_no_such_flag",)))
  probe = gp.Probe(gp.parse_args(["--tiny"]))
  got = gp.run_in_children(probe, gp.Variant.parse("f32-host-1-cmdbuf_all"), str(tmp_path), 600)
  assert got["status"] == "ok", got
  assert got["dropped_flags"] == [*optional, "--xla_no_such_flag"]
  assert got["xla_flags"] == " ".join(flags) and "CONDITIONAL,WHILE" in got["xla_flags"]
  # The child rebuilt the same data, model and batches: the parent's reference, to float32
  # rounding (this pytest process splits the CPU into 8 devices, which sum in another order).
  assert got["loss_rel_diff"] < 1e-6 and got["update_rel_diff"] < 1e-4
  # And the profile of a flag variant, taken in its own child.
  folder = str(tmp_path / "profile")
  runs, dropped = gp.spawn_flags(
    probe, gp.Variant(), 1, flags, gp.PROFILE_FLAGS, str(tmp_path), 600, folder
  )
  assert dropped == [] and runs[0]["status"] == "ok"
  assert runs[0]["profile"]["ops_per_step"] > 0 and runs[0]["profile"]["folder"] == folder
