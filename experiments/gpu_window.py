"""One GPU window's work: the probe, then as much of the paper's tables as the time allows.

    python -m experiments.gpu_window --prepare-data     # here, once: the data a window carries
    PYTHONPATH=. python3 -m experiments.gpu_window --budget-s 540 --out $OUT   # on the GPU
    python -m experiments.gpu_window --merge DIR        # here: a window's records, kept
    python -m experiments.gpu_window --tiny --budget-s 150 --out /tmp/w   # the CPU check

GPU time comes in windows of about ten minutes, on a machine that starts bare, reads no
network, and brings back only the files its command writes under ``$OUT``. A window:

1. finds the data: ``.carry/cifar10-jpeg/{train,test}.zip.xz`` (made by ``--prepare-data``),
   unpacked into a temporary folder and checked against the copy's ``SHA256SUMS``; else
   ``--data-dir``. The CIFAR-10 JPEG zips are 61 MB, more than the 64 MiB a call may carry
   with the checkout; xz packs them, byte for byte, into 19 MB (the JPEG headers repeat);
2. runs the probe, ``benchmarks/gpu_probe.py --out OUT/gpu_probe.json``, within a fixed part
   of the budget (``--probe-share``, at most 170 s), stopped if it overruns; unless
   ``benchmarks/results/gpu_probe_<platform>_<device>.json`` holds an earlier window's probe
   of this device (``--merge`` keeps it there), which then stands (``--probe always`` runs it
   again);
3. runs the tables, ``python -m experiments.paper_tables --protocol full`` with what is left
   of the budget, the probe's JSON (its fastest variant the kit can run) and ``--mirror
   OUT``: each finished run's record is appended at once to the checkout's
   ``experiments/results/`` (which holds the records of earlier windows, so their runs are
   skipped) and to ``OUT/``, so a window cut short loses only the runs in flight. The
   tables are stopped at the end of the budget if a run overruns its estimate;
4. writes ``OUT/window.log`` (everything printed) and ``OUT/window.json`` (the budget, the
   probe's choice, the runs trained, why the tables stopped).

At most 5 files come back, none in a folder: the two above, the probe's JSON and the record
files the tables appended to (``paper_tables_full.jsonl``, ``noise_protocol_gpu.jsonl``).
``--merge DIR`` then appends the records of such a folder that ``experiments/results/`` lacks
(by key) and keeps the probe's JSON as ``benchmarks/results/gpu_probe_<platform>_<device>.json``.

The device tool's call (the command runs in the checkout's root; ``carry`` names the
ignored folder the data is in; 600 s is a call's limit, 60 s more than the budget, for the
start of Python and the copy of the files back)::

    run(command="PYTHONPATH=. python3 -m experiments.gpu_window --budget-s 540 --out $OUT",
        carry=[".carry"], timeout_s=600)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from experiments import common

CARRY = os.path.join(common.ROOT, ".carry", "cifar10-jpeg")
ZIPS = ("train.zip", "test.zip")
PROBE = os.path.join(common.ROOT, "benchmarks", "gpu_probe.py")
PROBE_MAX_S = 170.0  # The probe's own default budget: its default variants on a GPU.
RESERVE_S = 15.0  # Kept back from the tables for the summary and the files' way back.


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _sums(folder: str) -> dict[str, str]:
  """``SHA256SUMS`` of ``folder`` as ``{file: digest}``."""
  out = {}
  with open(os.path.join(folder, "SHA256SUMS")) as f:
    for line in f:
      if line.strip():
        digest, name = line.split()
        out[name.lstrip("*")] = digest
  return out


def prepare_data(source: str, dest: str = CARRY, log=print) -> None:
  """Packs ``source``'s zips into ``dest`` with xz, with their checksums; a pack that is there
  already for the same zips is kept."""
  sums = _sums(source)
  os.makedirs(dest, exist_ok=True)
  there = os.path.join(dest, "SHA256SUMS")
  if os.path.exists(there) and _sums(dest) == {z: sums[z] for z in ZIPS}:
    if all(os.path.exists(os.path.join(dest, z + ".xz")) for z in ZIPS):
      log(f"{dest}: up to date")
      return
  for z in ZIPS:
    t0 = time.time()
    packed = os.path.join(dest, z + ".xz")
    with (
      open(os.path.join(source, z), "rb") as f,
      lzma.open(packed + ".part", "wb", preset=9 | lzma.PRESET_EXTREME) as out,
    ):
      shutil.copyfileobj(f, out, 1 << 20)
    os.replace(packed + ".part", packed)
    log(f"{packed}: {os.path.getsize(packed) / 1e6:.1f} MB ({time.time() - t0:.0f} s)")
  with open(there, "w") as f:
    f.write("".join(f"{sums[z]}  {z}\n" for z in ZIPS))


def unpack_data(carried: str, dest: str, log=print) -> str:
  """The carried zips unpacked into ``dest`` and checked; returns ``dest``."""
  sums = _sums(carried)
  os.makedirs(dest, exist_ok=True)
  for z in ZIPS:
    out = os.path.join(dest, z)
    with lzma.open(os.path.join(carried, z + ".xz"), "rb") as f, open(out, "wb") as g:
      shutil.copyfileobj(f, g, 1 << 20)
    if _sha256(out) != sums[z]:
      raise SystemExit(f"{out}: its SHA-256 is not the copy's; pack it again (--prepare-data)")
  shutil.copy(os.path.join(carried, "SHA256SUMS"), dest)
  log(f"data: {carried} unpacked into {dest}, checksums good")
  return dest


class Log:
  """Everything the window prints, also into ``OUT/window.log``."""

  def __init__(self, path: str):
    self.f = open(path, "a")
    self.t0 = time.time()

  def __call__(self, line: str) -> None:
    text = f"[{time.time() - self.t0:6.0f} s] {line}"
    print(text, flush=True)
    self.f.write(text + "\n")
    self.f.flush()


def _stream(cmd, env, log, stop_at: float) -> tuple[int, bool]:
  """Runs ``cmd``, its output into ``log``; stops it at ``stop_at``. (exit code, stopped)."""
  proc = subprocess.Popen(
    cmd, env=env, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )

  def pump():
    for line in proc.stdout:
      log(line.rstrip())

  reader = threading.Thread(target=pump, daemon=True)
  reader.start()
  stopped = False
  try:
    proc.wait(timeout=max(1.0, stop_at - time.time()))
  except subprocess.TimeoutExpired:
    stopped = True
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  reader.join(timeout=5)
  return proc.returncode, stopped


def _known_probe(env: dict, log) -> str | None:
  """This device's probe JSON under ``benchmarks/results/``, if an earlier window's is there
  (``--merge`` keeps it): a window need not spend its time probing again."""
  from experiments.tables import find_probe

  ask = "import jax; print(jax.default_backend()); print(jax.devices()[0].device_kind)"
  got = subprocess.run(
    [sys.executable, "-c", ask], env=env, capture_output=True, text=True, timeout=300
  )
  if got.returncode != 0:
    log(f"probe: the device did not answer: {got.stderr[-500:]}")
    return None
  platform, device = got.stdout.strip().splitlines()[-2:]
  return find_probe(platform, device)


def window(args) -> dict:
  t0 = time.time()
  end = t0 + args.budget_s
  os.makedirs(args.out, exist_ok=True)
  log = Log(os.path.join(args.out, "window.log"))
  protocol = "tiny" if args.tiny else args.protocol
  summary: dict = dict(budget_s=args.budget_s, protocol=protocol, started=time.ctime(t0))
  data_dir = args.data_dir
  if data_dir is None and os.path.exists(os.path.join(args.carry, "SHA256SUMS")):
    data_dir = unpack_data(args.carry, tempfile.mkdtemp(prefix="absgd-cifar10-"), log)
  data_dir = data_dir or common.DATA_DIR
  summary["data_dir"] = data_dir
  path = os.pathsep.join(p for p in (common.ROOT, os.environ.get("PYTHONPATH")) if p)
  env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")

  probe_json = os.path.join(args.out, "gpu_probe.json")
  known = _known_probe(env, log) if args.probe == "auto" else None
  if known or args.probe == "never":
    probe_json = known or ""
    log(f"probe: not run; {known or 'none'} stands for this device")
    summary["probe"] = dict(run=False, json=probe_json)
  else:
    probe_s = min(PROBE_MAX_S, args.probe_share * args.budget_s)
    cmd = [sys.executable, PROBE, "--out", probe_json, "--budget-s", f"{probe_s:.0f}"]
    cmd += ["--tiny"] if args.tiny else []
    log(f"probe: {probe_s:.0f} s of the {args.budget_s:.0f} s budget")
    code, stopped = _stream(cmd, env, log, time.time() + probe_s + 30)
    summary["probe"] = dict(run=True, exit_code=code, stopped=stopped, json=probe_json)
    if not os.path.exists(probe_json):
      log("probe: no JSON; the tables run with the default strategy")

  left = end - time.time() - RESERVE_S
  cmd = [sys.executable, "-m", "experiments.paper_tables", "--protocol", protocol]
  cmd += ["--budget-s", f"{max(left, 0):.0f}", "--mirror", args.out, "--data-dir", data_dir]
  cmd += ["--probe", probe_json] if probe_json and os.path.exists(probe_json) else []
  cmd += ["--results-dir", args.results_dir] if args.results_dir else []
  cmd += ["--work", args.work] if args.work else []
  cmd += args.tables_args
  log(f"tables: {left:.0f} s left: {' '.join(cmd[1:])}")
  lines: list[str] = []

  def keep(line: str) -> None:
    lines.append(line)
    log(line)

  code, stopped = _stream(cmd, env, keep, end - RESERVE_S / 3)
  said = [line for line in lines if line.startswith(("strategy ", "stopped", "next: "))]
  summary["tables"] = dict(
    exit_code=code,
    stopped_at_the_budget=stopped,
    strategy=next((s for s in said if s.startswith("strategy ")), None),
    why_stopped=next((s for s in said if s.startswith("stopped")), None),
  )
  summary["records"] = {
    f: len(common.read_records(os.path.join(args.out, f)))
    for f in sorted(os.listdir(args.out))
    if f.endswith(".jsonl")
  }
  summary["elapsed_s"] = time.time() - t0
  with open(os.path.join(args.out, "window.json"), "w") as f:
    json.dump(summary, f, indent=1)
  log(f"window: {summary['elapsed_s']:.0f} s; records brought back: {summary['records']}")
  return summary


BENCHMARKS = os.path.join(common.ROOT, "benchmarks", "results")


def merge(
  folder: str, results: str = common.RESULTS, benchmarks: str = BENCHMARKS, log=print
) -> dict[str, int]:
  """Appends the records of a window's folder that ``results`` lacks (by key), and keeps its
  probe's JSON in ``benchmarks``; returns the records added per file."""
  added = {}
  for name in sorted(os.listdir(folder)):
    src = os.path.join(folder, name)
    if name.endswith(".jsonl"):
      dest = os.path.join(results, name)
      have = {r["key"] for r in common.read_records(dest)}
      new = [r for r in common.read_records(src) if r["key"] not in have]
      for r in new:
        common.append_record(dest, r)
      added[name] = len(new)
      log(f"{dest}: {len(new)} records added")
    elif name == "gpu_probe.json":
      with open(src) as f:
        machine = json.load(f).get("machine", {})
      kind = re.sub(r"[^a-z0-9]+", "-", str(machine.get("device", "unknown")).lower()).strip("-")
      dest = os.path.join(benchmarks, f"gpu_probe_{machine.get('platform')}_{kind}.json")
      shutil.copy(src, dest)
      log(f"{dest}: the probe's JSON")
  return added


def main(argv=None):
  ap = argparse.ArgumentParser(
    description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--budget-s", type=float, default=540.0, help="the window's seconds in all")
  ap.add_argument("--out", default=None, help="where the files that come back are written")
  ap.add_argument("--protocol", choices=("full", "reduced"), default="full")
  ap.add_argument("--tiny", action="store_true", help="the tiny protocol and the probe's --tiny")
  ap.add_argument(
    "--probe",
    choices=("auto", "always", "never"),
    default="auto",
    help="auto: run the probe unless benchmarks/results/ has this device's JSON",
  )
  ap.add_argument(
    "--probe-share", type=float, default=0.3, help="the probe's share of the budget (<= 170 s)"
  )
  ap.add_argument("--data-dir", default=None, help="the CIFAR-10 zips (default: the carried)")
  ap.add_argument("--carry", default=CARRY, help="the carried, packed data")
  ap.add_argument("--results-dir", default=None, help="the record files (default: the tables')")
  ap.add_argument("--work", default=None, help="the runs' folders (default: runs/)")
  ap.add_argument("--prepare-data", action="store_true", help="pack --data-dir into --carry")
  ap.add_argument("--merge", default=None, metavar="DIR", help="keep a window's records")
  ap.add_argument(
    "tables_args", nargs="*", help="more options for experiments.paper_tables (after --)"
  )
  args = ap.parse_args(argv)
  if args.prepare_data:
    return prepare_data(args.data_dir or common.DATA_DIR, args.carry)
  if args.merge:
    return merge(args.merge, args.results_dir or common.RESULTS)
  if not args.out:
    ap.error("--out is needed: the folder whose files the window brings back")
  return window(args)


if __name__ == "__main__":
  main()
