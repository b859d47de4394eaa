"""What ``src.kaggle bundle --half`` costs on OOF: a run's best checkpoints halved as the bundle halves them, every
fold's validation rows predicted again with them, and the OOF score and probabilities set beside the run's own
(float32) valid predictions.

    python -m benchmarks.fp16_bundle experiments/<a --fold all run>
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from src.inference.oof import read_predictions
from src.kaggle.bundle import copy_model
from src.predict import PredictConfig, predict
from src.tracking import rundir


def oof_of(run: Path, out: Path, half: bool) -> tuple[float, np.ndarray]:
    """The OOF score and probabilities of ``run``'s best checkpoints copied as the bundle copies them."""
    copy_model(run, out, half=half)
    for fold in rundir.fold_dirs(run):  # which rows each fold validates, for predict --oof
        shutil.copyfile(fold / rundir.PREDICTIONS, out / fold.relative_to(run) / rundir.PREDICTIONS)
    result = predict(PredictConfig(run=str(out), oof=True, device="cpu"))
    folds = rundir.read_fold_runs(out)
    return result["oof_tta_none"], read_predictions(out / "oof_tta-none.csv", folds[0].task)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    run = parser.parse_args().run
    with tempfile.TemporaryDirectory() as tmp:
        full_score, full = oof_of(run, Path(tmp) / "float32", half=False)
        half_score, halved = oof_of(run, Path(tmp) / "fp16", half=True)
        sizes = [sum(p.stat().st_size for p in (Path(tmp) / d).rglob("*.pt")) / 2**20 for d in ("float32", "fp16")]
    print(f"{run.name}: OOF float32 {full_score:.6f}, fp16 {half_score:.6f}; largest probability change "
          f"{np.abs(full - halved).max():.2e}; checkpoints {sizes[0]:.1f} MiB -> {sizes[1]:.1f} MiB")


if __name__ == "__main__":
    main()
