#!/usr/bin/env bash
# The figures a lent GPU gives, in one run of at most 8 minutes on one H100: one line per figure ("FIGURE ..."),
# every step under its own timeout, the logs under OUT.
#
#     bash benchmarks/gpu.sh [OUT]            # OUT: where logs, data and runs go (default /tmp/gpu-bench)
#
# On a machine without CUDA it runs what it can (the environment, the photo competition, the CPU loader figures)
# and names each step that needs CUDA. On the device tool's GPU machine (its own torch with CUDA, no network):
# first, here, `bash benchmarks/gpu_wheels.sh` (the packages it lacks, into .whl/), then run with `carry: [".whl"]`;
# this script installs them with pip --no-deps when .whl/ exists. NOTES.md holds what it printed.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu-bench}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ] && ! $PY -c "import ignite, albumentations, tyro, efficientnet_pytorch" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
cuda=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
cores=$($PY -c "import os; print(len(os.sched_getaffinity(0)))")
photos=${PHOTOS:-$OUT/photos}

# step NAME SECONDS COMMAND...: runs it with a timeout, keeps its log, prints its FIGURE lines and how it ended
step() {
  local name=$1 limit=$2
  shift 2
  local started=$SECONDS
  timeout --kill-after 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep '^FIGURE' "$OUT/$name.log"
  echo "STEP $name: exit $rc in $((SECONDS - started)) s$([ $rc = 124 ] && echo " (timed out at $limit s)")"
  [ $rc = 0 ] || tail -5 "$OUT/$name.log" | sed 's/^/  | /'
}
needs_cuda() { echo "STEP $1: needs CUDA, skipped ($2)"; }

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null \
  | sed 's/^/FIGURE env gpu: /' || echo "FIGURE env gpu: none (nvidia-smi not found)"
$PY - <<'EOF'
import os, shutil, torch
cuda = torch.cuda.is_available()
print(f"FIGURE env torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"bf16 {cuda and torch.cuda.is_bf16_supported()}, GPUs {torch.cuda.device_count()}")
print(f"FIGURE env cores {len(os.sched_getaffinity(0))} (machine {os.cpu_count()}), /dev/shm free "
      f"{shutil.disk_usage('/dev/shm').free / 2**30:.1f} GiB, memory "
      f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB")
EOF

echo "== the CUDA-only tests"
if [ "$cuda" = 1 ]; then
  step cuda_tests 150 $PY -m pytest tests/ -m cuda -q -p no:cacheprovider
else
  needs_cuda cuda_tests "pytest tests/ -m cuda"
fi

echo "== a photo competition: 20,000 JPEGs of 500x375"
[ -f "$photos/train.csv" ] || step make_photos 120 $PY -m src.tools.make_photos --out "$photos" --images 20000 \
  --size 500x375 --workers "$cores"

echo "== the step: effnet-b0 at 224 px, batch 256, in-memory batches, hand-written loop vs trainer"
if [ "$cuda" = 1 ]; then
  step gpu_step 150 $PY -m benchmarks.gpu_step --arch effnet-b0 --img-size 224 --batch-size 256 --iters 30 \
    --warmup 10 --repeats 3 --variants bf16-cl fp16-cl bf16
else
  needs_cuda gpu_step "python -m benchmarks.gpu_step"
fi

echo "== the loader on the photos: per worker core against timm, then the rate delivered with 8 and 14 workers"
step loader_1 100 $PY -m benchmarks.loader_speed --train-csv "$photos/train.csv" --image-dir "$photos/train" \
  --img-size 224 --workers 1 --images 768 --repeats 3 --compare timm
if [ "$cuda" = 1 ]; then
  for workers in 8 14; do
    step "loader_$workers" 60 $PY -m benchmarks.loader_speed --train-csv "$photos/train.csv" \
      --image-dir "$photos/train" --img-size 224 --workers "$workers" --images 8192 --batch-size 256 --repeats 2 \
      --device cuda
  done
else
  needs_cuda loader_8_14 "the rate on the GPU with 8 and 14 workers"
fi

echo "== two short epochs of training on the photos (steady-state images/s), then --batch-size auto"
if [ "$cuda" = 1 ]; then
  flags=(--train-csv "$photos/train.csv" --image-dir "$photos/train" --image-template "{id}.jpg" --img-size 224
    --arch effnet-b0 --no-progress --no-notes --no-pictures --no-verify-images --output-dir "$OUT/runs")
  step train 170 $PY -m src.train "${flags[@]}" --batch-size 256 --epochs 2 --run-name photos-b256
  $PY - "$OUT/runs/photos-b256" <<'EOF'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
if (run / "summary.json").is_file():
    s = json.loads((run / "summary.json").read_text())
    for row in csv.DictReader((run / "history.csv").open()):
        print(f"FIGURE train epoch {row['epoch']}: {row['train_images_per_s']} images/s over the epoch, "
              f"{row['train_images_per_s_steady']} steady, {row['epoch_time_s']} s, valid accuracy "
              f"{float(row['valid_accuracy']):.4f}")
    print(f"FIGURE train wall {s['wall_time_s']} s for 2 epochs, best valid accuracy {s['best_valid_score']}")
EOF
  step batch_auto 90 $PY -m src.train "${flags[@]}" --batch-size auto --epochs 1 --max-iters-per-epoch 20 \
    --run-name photos-auto
  grep -o "batch-size auto: .*" "$OUT/batch_auto.log" | sed 's/^/FIGURE /'
else
  needs_cuda train "python -m src.train on the photos, 2 epochs"
  needs_cuda batch_auto "--batch-size auto"
fi
echo "== done in $SECONDS s; logs in $OUT"
