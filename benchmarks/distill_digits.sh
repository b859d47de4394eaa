#!/usr/bin/env bash
# Issue 16's benchmark, reduced to fit a 2-core CPU session: the digits competition (4,500 train / 500 test images),
# teacher = 5-fold effnet-b0 (--epochs E_TEACHER), students = 5-fold resnet18 (--epochs E_STUDENT) with and without
# distillation for each seed, and the soup of each student fold's 3 best checkpoints. Prints OOF scores (cv_summary)
# and held-out test accuracies.    bash benchmarks/distill_digits.sh [out] [E_TEACHER] [E_STUDENT] [SEEDS...]
# Environment: STUDENT=<arch> (default resnet18); TEACHER=<folder> uses an existing --fold all run or src.ensemble
# blend (with oof.csv and test_predictions.csv) as the teacher instead of training effnet-b0 for E_TEACHER epochs.
set -euo pipefail
OUT=${1:-/tmp/distill_digits}; ET=${2:-6}; ES=${3:-4}; shift 3 || true; SEEDS=${*:-"1 2 3"}
DATA=$OUT/data
[ -f "$DATA/train.csv" ] || python -m src.tools.export_digits --out "$DATA" --layout images --test-fraction 0.1
COMMON=(--train-csv "$DATA/train.csv" --image-dir "$DATA/train" --fold all --split-seed 0 --no-progress --no-notes
        --no-pictures --output-dir "$OUT/runs")
TEST=(--test-csv "$DATA/test.csv" --image-dir "$DATA/test")
test_accuracy() {  # run folder -> accuracy of its submission on solution.csv
  python -m src.predict --run "$1" "${TEST[@]}" > /dev/null 2>&1
  python -c "import pandas as p,sys; s=p.read_csv(sys.argv[1]+'/submission.csv',dtype=str); t=p.read_csv(sys.argv[2],dtype=str); m=s.merge(t,on='id'); print(f'{(m.label_x==m.label_y).mean():.4f}')" "$1" "$DATA/solution.csv"
}
STUDENT=${STUDENT:-resnet18}
if [ -z "${TEACHER:-}" ]; then
  TEACHER=$OUT/runs/teacher
  python -m src.train "${COMMON[@]}" --arch effnet-b0 --epochs "$ET" --run-name teacher > /dev/null 2>&1
  echo "teacher effnet-b0 ${ET} epochs: OOF $(python -c "import json;print(json.load(open('$TEACHER/cv_summary.json'))['oof_score'])") test $(test_accuracy "$TEACHER")"
fi
for seed in $SEEDS; do
  for kind in plain kd; do
    extra=(); [ "$kind" = kd ] && extra=(--teacher "$TEACHER" --teacher-weight 0.5 --teacher-temperature 2)
    name=$STUDENT-e$ES-$kind-s$seed
    python -m src.train "${COMMON[@]}" --arch "$STUDENT" --epochs "$ES" --seed "$seed" --n-saved 3 --run-name "$name" \
      "${extra[@]}" > /dev/null 2>&1
    python -m src.soup "$OUT/runs/$name" --k 3 > /dev/null 2>&1
    oof=$(python -c "import json;print(json.load(open('$OUT/runs/$name/cv_summary.json'))['oof_score'])")
    soup=$(python -c "import json;print(json.load(open('$OUT/runs/$name-soup/cv_summary.json'))['oof_score'])")
    echo "seed $seed $kind: OOF $oof test $(test_accuracy "$OUT/runs/$name") | soup of 3: OOF $soup test $(test_accuracy "$OUT/runs/$name-soup")"
  done
done
