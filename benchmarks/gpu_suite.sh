#!/usr/bin/env bash
# The GPU checks, prepared to run in one go on a GPU machine (no network, jax preinstalled):
#
#   bash benchmarks/gpu_suite.sh OUT [SECONDS]
#
# 1. step time ABSGD vs SGD (ResNet-32 b128 at 32 px; ResNet-50 b64 at 224 px),
# 2. absgd_jax vs PyTorch on the same ResNet-32 ABSGD step,
#    and a lam sweep of 8 ResNet-32s as one program vs one run, beside torch.compile,
# 3. the input pipeline's throughput and the one-time decode of train.zip,
# 4. two timed epochs of the paper's CIFAR-10-LT command (ResNet-32),
# 5. with the time left before SECONDS (default 540), the CIFAR-10-LT and -ST protocol,
#    SGD vs ABSGD, side by side on the one GPU; the number of epochs is what fits (200 is the
#    paper's), and the decay and stage-2 epochs scale with it.
# DATA (default .gpu_data) holds CIFAR-10's train.zip and test.zip. Results land in OUT as
# bench.json, train_runs.tgz (refreshed while training) and log.txt.
set -u
out=$1 budget=${2:-540}
start=$(date +%s)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export ABSGD_CACHE=${ABSGD_CACHE:-/tmp/absgd-cache}
data=${DATA:-.gpu_data}
py=python3
b=/tmp/bench
mkdir -p "$out" "$b" /tmp/runs
left() { echo $(( budget - ($(date +%s) - start) )); }
nvidia-smi -L 2>/dev/null
$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"

if [ -z "${SKIP_BENCH:-}" ]; then
timeout 110 $py benchmarks/step_time.py ${QUICK:+--rounds 2 --steps 2} --json $b/step_time_resnet32.json
timeout 150 $py benchmarks/step_time.py --model resnet50 --batch 64 --image 224 --classes 1000 \
    --rounds ${QUICK:-8} --steps ${QUICK:-5} --json $b/step_time_resnet50.json
timeout 100 $py benchmarks/vs_pytorch.py ${QUICK:+--rounds 1 --steps 1} --json $b/vs_pytorch.json
timeout 180 $py benchmarks/sweep_time.py --members 8 --torch ${QUICK:+--rounds 1 --steps 2} \
    --json $b/sweep_time.json
timeout 80 $py benchmarks/data_throughput.py --decode --zip "$data/train.zip" \
    ${QUICK:+--steps 5 --repeats 2} --json $b/data_throughput.json
timeout 150 $py -m absgd_jax.train --config cifar10-lt --set data_dir="$data" --set epochs=2 \
    --set checkpoint=false --out /tmp/epoch_time --no-progress --no-plots \
    ${MODEL:+--set model=$MODEL} && cp /tmp/epoch_time/metrics.jsonl $b/epoch_time.jsonl
fi
$py - "$b" "$out/bench.json" <<'EOF'
import glob, json, os, sys
res = {}
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*"))):
  with open(p) as f:
    res[os.path.basename(p)] = ([json.loads(l) for l in f] if p.endswith(".jsonl")
                                else json.load(f))
json.dump(res, open(sys.argv[2], "w"), indent=1)
EOF

# How many epochs of the protocol fit in what is left: 4 runs share the GPU.
epoch_s=$($py -c "import json; r=[json.loads(l) for l in open('$b/epoch_time.jsonl')]; print(r[-1]['epoch_time_s'])" 2>/dev/null || echo 0)
remaining=$(( $(left) - 45 ))
epochs=$($py -c "print(max(0, min(200, int($remaining / (2.5 * $epoch_s + 0.15))))) if $epoch_s > 0 else print(0)")
[ -n "${EPOCHS:-}" ] && epochs=$EPOCHS  # a fixed count instead (for testing the script)
echo "epoch time ${epoch_s}s alone; ${remaining}s left -> ${epochs} epochs per run"
if [ "$epochs" -ge 10 ]; then
  s2=$(( epochs * 160 / 200 )); d1=$(( epochs * 160 / 200 )),$(( epochs * 180 / 200 ))
  w=$(( epochs * 5 / 200 )); [ $w -lt 1 ] && w=1
  for cfg in cifar10-lt cifar10-st; do
    for method in sgd absgd; do
      [ "$method" = sgd ] && st=0 || st=$s2
      timeout $(( $(left) - 20 )) $py -m absgd_jax.train --config $cfg --set data_dir="$data" \
          --set method=$method --set epochs=$epochs --set lr_decay_epochs=$d1 \
          --set warmup_epochs=$w --set stage2_epoch=$st --set checkpoint=false \
          --set eval_every=$(( epochs / 20 > 0 ? epochs / 20 : 1 )) \
          ${MODEL:+--set model=$MODEL} --out /tmp/runs/${cfg}_${method} --no-progress > /tmp/runs/${cfg}_${method}.log 2>&1 &
    done
  done
  while [ -n "$(jobs -r)" ]; do
    sleep 20
    tar czf "$out/.train_runs.tgz" -C /tmp runs && mv "$out/.train_runs.tgz" "$out/train_runs.tgz"
  done
  tail -n 2 /tmp/runs/*.log
  tar czf "$out/.train_runs.tgz" -C /tmp runs && mv "$out/.train_runs.tgz" "$out/train_runs.tgz"
fi
echo "done after $(( $(date +%s) - start ))s"
