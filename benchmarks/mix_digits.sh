#!/usr/bin/env bash
# Issue 19's accuracy benchmark of the mixing rows: the default recipe (effnet-b0, 18 epochs) on the bundled digits,
# --split-seed 0, fold 0, against CutMix, mixup + CutMix switching, and manifold mixup, for each seed; the configs
# alternate within a seed so that a slow spell of the machine hits all of them alike. Prints one line per run
# (best valid accuracy, its epoch, the last epoch's accuracy, train images/s) and the medians per config.
#     bash benchmarks/mix_digits.sh [out] [SEEDS...]        (about 5-6 minutes per run on 2 CPU cores)
set -euo pipefail
OUT=${1:-/tmp/mix_digits}; shift || true; SEEDS=${*:-"1 2 3"}
declare -A MIX=(
  [default]=""
  [cutmix]="--cutmix-alpha 1.0"
  [mixup+cutmix]="--mixup-alpha 0.4 --cutmix-alpha 1.0 --switch-prob 0.5"
  [manifold]="--mixup-alpha 0.4 --mixup-at features"
)
ORDER=(default cutmix mixup+cutmix manifold)
for seed in $SEEDS; do
  for name in "${ORDER[@]}"; do
    run=$OUT/${name/+/_}-s$seed
    [ -f "$run/summary.json" ] || python -m src.train --arch effnet-b0 --split-seed 0 --fold 0 --seed "$seed" \
      --no-progress --no-notes --no-pictures --output-dir "$OUT" --run-name "$(basename "$run")" ${MIX[$name]} \
      > "$run.log" 2>&1
    python - "$run" "$name" "$seed" <<'PY'
import csv, json, sys
run, name, seed = sys.argv[1:]
summary = json.load(open(f"{run}/summary.json"))
rows = list(csv.DictReader(open(f"{run}/history.csv")))
print(f"{name:13s} seed {seed}: best {summary['best_valid_score']:.4f} (epoch {summary['best_epoch']}), "
      f"last {float(rows[-1]['valid_accuracy']):.4f}, {summary['train_images_per_s']} images/s", flush=True)
PY
  done
done
python - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
for name in ("default", "cutmix", "mixup_cutmix", "manifold"):
    scores = sorted(json.load(open(p))["best_valid_score"] for p in out.glob(f"{name}-s*/summary.json"))
    if scores:
        print(f"{name:13s} median {statistics.median(scores):.4f}, range {scores[0]:.4f}-{scores[-1]:.4f} ({len(scores)} seeds)")
PY
