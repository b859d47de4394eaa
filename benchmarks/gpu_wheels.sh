#!/usr/bin/env bash
# Wheels of what a lent GPU machine lacks, for benchmarks/gpu.sh: that machine has its own torch (with CUDA),
# torchvision, OpenCV, pandas, scikit-learn, scikit-image, timm and the rest of the scientific stack, Python 3.12,
# and no network. This downloads (here, where pip reaches PyPI) the packages our code imports that it lacks, at the
# versions installed in this environment, into .whl/ (ignored by git; carried with the device tool's `carry`).
#
#     bash benchmarks/gpu_wheels.sh [.whl]
#
# gpu.sh installs them with `pip install --no-index --no-deps --target` when the folder exists.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mkdir -p "$dest"
grep -qx "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude

version() { python -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
pin() { for name in "$@"; do echo "$name==$(version "$name")"; done; }

# compiled for CPython 3.12 on manylinux x86-64
binary=$(pin pydantic-core simsimd stringzilla)
pure=$(pin pytorch-ignite albumentations albucore pydantic annotated-types typing-inspection iterative-stratification \
  tyro docstring-parser typeguard mlxtend tensorboardX munch pytorch-metric-learning six)
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" $binary
python -m pip download -q --no-deps --only-binary=:all: -d "$dest" $pure
# published as source only: pure Python, built into wheels here
python -m pip wheel -q --no-deps -w "$dest" $(pin efficientnet-pytorch pretrainedmodels)
ls "$dest"
du -sh "$dest"
