"""What the bundle's ``inference.ipynb`` runs, offline, inside a code competition: `predict_bundle` predicts the
competition's test set with every model of the bundle (a run's folds, or an ensemble's members blended with the
ensemble's weights) and writes ``submission.csv``. It reads only the bundle and the competition's folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from src.ensemble import EnsembleConfig, ensemble
from src.predict import PredictConfig, predict
from src.tracking import rundir

BUNDLE_JSON = "bundle.json"
MODELS = "models"


def _test_path(competition_dir: Path, relative: str | None) -> str | None:
    return None if relative is None else str(competition_dir / relative)


def predict_bundle(
    bundle_dir: str | Path, competition_dir: str | Path, output: str | Path = "submission.csv", device: str = "auto"
) -> Path:
    """Predicts the test set of ``competition_dir`` with the models in ``bundle_dir``; writes ``output``.

    Args:
        bundle_dir: the bundle (its ``bundle.json`` and ``models/``), e.g. ``/kaggle/input/<dataset>``.
        competition_dir: the competition's files, e.g. ``/kaggle/input/<competition>``.
        output: the submission file to write (its folder holds the working files).
        device: 'auto', 'cpu' or 'cuda'.

    Raises:
        FileNotFoundError: no ``bundle.json`` in ``bundle_dir``, or a test file missing under ``competition_dir``.
    """
    bundle_dir, competition_dir, output = Path(bundle_dir), Path(competition_dir), Path(output)
    manifest_path = bundle_dir / BUNDLE_JSON
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: not a bundle (set BUNDLE_DIR to the bundle dataset's folder)")
    manifest = json.loads(manifest_path.read_text())
    test = manifest["test"]
    work = output.parent / "bundle_predictions"
    outputs = []
    for name in manifest["models"]:
        out = work / name
        predict(
            PredictConfig(
                run=str(bundle_dir / MODELS / name),
                test_csv=_test_path(competition_dir, test["test_csv"]),
                image_dir=_test_path(competition_dir, test.get("test_image_dir")),
                parquet=_test_path(competition_dir, test.get("test_parquet")),
                tta=manifest["tta"],
                tta_merge=manifest["tta_merge"],
                submission_format=manifest["submission_format"],
                sample_submission=_test_path(competition_dir, test.get("sample_submission")),
                output_dir=str(out),
                device=device,
            )
        )
        outputs.append(out)
    if len(outputs) == 1:
        result = outputs[0] / rundir.SUBMISSION
    else:
        for name, out in zip(manifest["models"], outputs):  # what src.ensemble reads besides the test predictions
            _copy_small_files(bundle_dir / MODELS / name, out)
        ensemble(
            EnsembleConfig(
                runs=[str(o) for o in outputs],
                method=manifest["method"],
                weights=",".join(map(str, manifest["weights"])),
                output_dir=str(work / "blend"),
                submission_format=manifest["submission_format"],
                sample_submission=_test_path(competition_dir, test.get("sample_submission")),
            )
        )
        result = work / "blend" / rundir.SUBMISSION
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result, output)
    print(f"wrote {output}")
    return output


def _copy_small_files(model_dir: Path, out: Path) -> None:
    for path in model_dir.rglob("*"):
        if path.is_file() and path.suffix != ".pt":
            target = out / path.relative_to(model_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copyfile(path, target)
