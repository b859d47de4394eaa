"""--fold all: every fold trained in its sub-folder, out-of-fold predictions cover every row once, resumable."""

import json
import shutil

import numpy as np
import pandas as pd

from src.train import main
from tests import helpers

FAST = ["--epochs", "1", "--batch-size", "8", "--train-eval-size", "8", "--img-size", "32", "--no-progress"]


def test_all_folds_write_oof_covering_every_row_once_and_skip_finished_folds(tmp_path, capsys):
    csv_path = helpers.pixel_csv(tmp_path, n=30)
    flags = ["--train-csv", str(csv_path), "--folds", "3", "--fold", "all", *FAST]
    flags += ["--output-dir", str(tmp_path), "--run-name", "cv"]
    assert main(flags) == 0
    run = tmp_path / "cv"
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str, "label": str})
    folds = pd.read_csv(run / "fold0" / "folds.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(folds["id"]) and oof["id"].is_unique  # every row exactly once
    assert dict(zip(oof["id"], oof["fold"])) == dict(zip(folds["id"], folds["fold"]))  # with its own fold
    probs = oof[[c for c in oof.columns if c.startswith("p_")]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0)
    summary = json.loads((run / "cv_summary.json").read_text())
    predicted = np.array([c[2:] for c in oof.columns if c.startswith("p_")])[probs.argmax(axis=1)]
    assert summary["oof_score"] == round(float((predicted == oof["label"]).mean()), 6)  # OOF accuracy by hand
    assert len(summary["fold_scores"]) == 3
    assert f"OOF {summary['oof_score']:.4f}" in capsys.readouterr().out

    # A finished fold is skipped, a missing one trained again: re-running the command completes the folds.
    kept = helpers.epoch_checkpoint(run / "fold0", 1).stat().st_mtime_ns
    shutil.rmtree(run / "fold1")
    assert main(flags) == 0
    assert helpers.epoch_checkpoint(run / "fold0", 1).stat().st_mtime_ns == kept
    assert (run / "fold1" / "valid_predictions.csv").is_file()
    assert len(pd.read_csv(run / "oof.csv")) == 30


def test_split_seed_keeps_the_folds_while_seed_changes_the_model(tmp_path):
    csv_path = helpers.pixel_csv(tmp_path, n=30)
    base = ["--train-csv", str(csv_path), "--folds", "3", *FAST, "--output-dir", str(tmp_path)]

    def run(name, *flags):
        assert main([*base, "--run-name", name, *flags]) == 0
        folds = pd.read_csv(tmp_path / name / "folds.csv", dtype={"id": str})
        return dict(zip(folds["id"], folds["fold"])), pd.read_csv(tmp_path / name / "valid_predictions.csv")

    folds_1, predictions_1 = run("seed1", "--seed", "1", "--split-seed", "7")
    folds_2, predictions_2 = run("seed2", "--seed", "2", "--split-seed", "7")
    folds_3, _ = run("seed3", "--seed", "3")
    assert folds_1 == folds_2 and folds_3 != folds_1  # --split-seed fixes the folds; alone, --seed reshuffles them
    assert list(predictions_1["id"]) == list(predictions_2["id"])  # the same valid rows...
    probabilities = [c for c in predictions_1.columns if c.startswith("p_")]
    assert not np.allclose(predictions_1[probabilities], predictions_2[probabilities])  # ...from another model


def test_a_time_budget_leaves_out_the_folds_that_do_not_fit(tmp_path, capsys):
    csv_path = helpers.pixel_csv(tmp_path, n=30)
    flags = ["--train-csv", str(csv_path), "--folds", "3", *FAST, "--output-dir", str(tmp_path), "--run-name", "cv"]
    assert main([*flags, "--time-budget", "1s"]) == 2  # without --fold all
    assert "--time-budget 1s plans the folds of --fold all; use --time-limit" in capsys.readouterr().err
    assert main([*flags, "--fold", "all", "--time-budget", "1s"]) == 0  # fold 0 measures; nothing else fits
    run = tmp_path / "cv"
    summary = json.loads((run / "cv_summary.json").read_text())
    folds = pd.read_csv(run / "fold0" / "folds.csv")
    assert summary["folds"] == [0] and summary["oof_rows"] == int((folds["fold"] == 0).sum())
    assert not (run / "fold1").exists()
