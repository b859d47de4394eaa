"""python -m src.predict on a tiny trained --fold all run: OOF reproduced without TTA, submissions, bad input."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.predict import main as predict_main
from src.tools.export_digits import write_competition
from src.train import main as train_main
from tests.helpers import class_images


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> Path:
    """A tiny competition (30 train / 10 test images, 3 classes) and a 2-fold run trained on it for one epoch."""
    root = tmp_path_factory.mktemp("competition")
    images, labels = class_images(40, 3)
    write_competition(images, [f"c{v}" for v in labels], root, test_fraction=0.25)
    flags = ["--train-csv", str(root / "train.csv"), "--image-dir", str(root / "train"), "--folds", "2"]
    flags += ["--fold", "all", "--epochs", "1", "--batch-size", "8", "--train-eval-size", "8", "--no-progress"]
    assert train_main([*flags, "--output-dir", str(root), "--run-name", "run"]) == 0
    return root


def test_oof_without_tta_reproduces_the_valid_predictions(competition, capsys):
    run = competition / "run"
    assert predict_main(["--run", str(run), "--oof", "--tta", "none"]) == 0
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str}).set_index("id")
    again = pd.read_csv(run / "oof_tta-none.csv", dtype={"id": str}).set_index("id").loc[oof.index]
    columns = [c for c in oof.columns if c.startswith("p_")]
    assert np.allclose(again[columns].to_numpy(), oof[columns].to_numpy(), atol=1e-5)
    score = json.loads((run / "cv_summary.json").read_text())["oof_score"]
    assert f"OOF accuracy: {score:.4f} without TTA, {score:.4f} with --tta none" in capsys.readouterr().out


def test_test_predictions_and_a_submission_in_the_sample_order(competition):
    run, out = competition / "run", competition / "out-flip"
    flags = ["--run", str(run), "--test-csv", str(competition / "test.csv"), "--image-dir", str(competition / "test")]
    flags += ["--tta", "flip", "--sample-submission", str(competition / "sample_submission.csv")]
    assert predict_main([*flags, "--output-dir", str(out)]) == 0
    sample = pd.read_csv(competition / "sample_submission.csv", dtype=str)
    submission = pd.read_csv(out / "submission.csv", dtype=str)
    assert list(submission.columns) == list(sample.columns) and submission["id"].tolist() == sample["id"].tolist()
    assert set(submission["label"]) <= {"c0", "c1", "c2"}
    probs = pd.read_csv(out / "test_predictions.csv")[["p_c0", "p_c1", "p_c2"]].to_numpy()
    assert len(probs) == 10 and np.allclose(probs.sum(axis=1), 1.0)


def test_bad_input_is_named(competition, tmp_path, capsys):
    run = competition / "run"
    test = ["--test-csv", str(competition / "test.csv"), "--image-dir", str(competition / "test")]
    empty = tmp_path / "empty-run"
    empty.mkdir()
    assert predict_main(["--run", str(empty), *test]) == 2
    assert "no config.yaml" in capsys.readouterr().err

    sample = pd.read_csv(competition / "sample_submission.csv").iloc[1:]  # one id fewer
    sample.to_csv(tmp_path / "sample.csv", index=False)
    flags = ["--run", str(run), *test, "--output-dir", str(tmp_path / "out")]
    assert predict_main([*flags, "--sample-submission", str(tmp_path / "sample.csv")]) == 2
    assert "predicted ids are not in the sample" in capsys.readouterr().err

    missing = pd.read_csv(competition / "test.csv")
    missing.loc[len(missing)] = ["img99999"]
    missing.to_csv(tmp_path / "test.csv", index=False)
    bad = ["--run", str(run), "--test-csv", str(tmp_path / "test.csv"), "--image-dir", str(competition / "test")]
    assert predict_main([*bad, "--output-dir", str(tmp_path / "out2")]) == 2
    assert "img99999" in capsys.readouterr().err


def test_pseudo_labels_join_the_training_fold_only(competition, tmp_path):
    test = ["--test-csv", str(competition / "test.csv"), "--image-dir", str(competition / "test")]
    assert predict_main(["--run", str(competition / "run"), *test, "--output-dir", str(tmp_path / "pred")]) == 0
    flags = ["--train-csv", str(competition / "train.csv"), "--image-dir", str(competition / "train"), "--folds", "2"]
    flags += ["--epochs", "1", "--batch-size", "5", "--train-eval-size", "8", "--no-progress", "--fold", "0"]
    flags += ["--output-dir", str(tmp_path)]
    pseudo = ["--pseudo-labels", str(tmp_path / "pred" / "test_predictions.csv"), "--pseudo-threshold", "0"]
    pseudo += ["--pseudo-test-csv", str(competition / "test.csv"), "--pseudo-image-dir", str(competition / "test")]
    assert train_main([*flags, "--run-name", "plain"]) == 0
    assert train_main([*flags, "--run-name", "pseudo", *pseudo]) == 0
    plain, extra = (pd.read_csv(tmp_path / name / "history.csv") for name in ("plain", "pseudo"))
    assert plain["iteration"].iloc[0] == 3 and extra["iteration"].iloc[0] == 5  # 15 train rows, then 15 + 10
    valid = [pd.read_csv(tmp_path / name / "valid_predictions.csv")["id"].tolist() for name in ("plain", "pseudo")]
    assert valid[0] == valid[1] and len(valid[0]) == 15  # the validation fold is untouched
