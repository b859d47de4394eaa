"""`python -m src.train` on each competition layout, with tiny generated data (one epoch, 2 folds)."""

import csv
import json

import pandas as pd
import pytest

from src.train import main
from src.training.checkpoints import read_checkpoint
from tests import helpers

FAST = ["--epochs", "1", "--batch-size", "8", "--train-eval-size", "8", "--folds", "2", "--img-size", "32"]


def _images(tmp):
    csv_path, folder = helpers.image_folder(tmp, n=24, num_classes=3)
    return ["--train-csv", str(csv_path), "--image-dir", str(folder), "--cache"], "single", 24, 1


def _pixels(tmp):
    return ["--train-csv", str(helpers.pixel_csv(tmp, n=24))], "single", 24, 1


def _parquet(tmp):
    csv_path, pattern = helpers.parquet_multihead(tmp, n=24)
    flags = ["--train-csv", str(csv_path), "--parquet", pattern, "--id-col", "image_id", "--height", "12"]
    flags += ["--width", "16", "--label-col", "grapheme_root,vowel_diacritic,consonant_diacritic"]
    return [*flags, "--head-weights", "2,1,1", "--mixup-alpha", "0.4", "--loss", "focal"], "multihead", 24, 1


def _six_channel(tmp):
    csv_path, root = helpers.six_channel(tmp, n=12)
    flags = ["--train-csv", str(csv_path), "--image-dir", str(root), "--label-col", "sirna", "--group-col", "plate"]
    return (
        [*flags, "--image-template", "{experiment}/{id}_w{channel}.png", "--channels", "1,2,3,4,5,6"],
        "single",
        12,
        6,
    )


def _strokes(tmp):
    folder = helpers.stroke_csvs(tmp, per_class=10)
    flags = ["--train-csv", str(folder / "*.csv"), "--label-col", "word", "--id-col", "key_id"]
    return [*flags, "--max-per-class", "8"], "single", 24, 1


def _multilabel(tmp):
    csv_path, folder = helpers.planet_multilabel(tmp, n=24)
    flags = ["--train-csv", str(csv_path), "--image-dir", str(folder), "--image-template", "{id}.jpg"]
    return (
        [*flags, "--id-col", "image_name", "--label-col", "tags", "--multilabel", "--aug", "heavy", "--loss", "focal"],
        "multilabel",
        24,
        3,
    )


@pytest.mark.parametrize("layout", [_images, _pixels, _parquet, _six_channel, _strokes, _multilabel])
def test_trains_on_the_layout_and_describes_the_data(tmp_path, layout):
    flags, kind, rows, in_chans = layout(tmp_path)
    out = tmp_path / "experiments"
    assert main([*flags, *FAST, "--output-dir", str(out), "--run-name", "run", "--no-progress"]) == 0
    run = out / "run"
    task = json.loads((run / "classes.json").read_text())
    assert task["kind"] == kind
    folds = pd.read_csv(run / "folds.csv")
    assert len(folds) == rows and set(folds["fold"]) == {0, 1}
    with (run / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert 0.0 <= float(history[0]["valid_accuracy"]) <= 1.0
    if kind == "multihead":
        assert "valid_accuracy_grapheme_root" in history[0]
    state = read_checkpoint([helpers.epoch_checkpoint(run, 1)])[1]
    first_conv = next(v for k, v in state["model"].items() if v.ndim == 4)
    assert first_conv.shape[1] == in_chans
    _check_pictures(run, kind)


def _check_pictures(run, kind):
    """TensorBoard's pictures for the task: image grids and top losses, per head confusion matrices, PR curves
    for tags."""
    tags = helpers.tensorboard_tags(run)
    assert {"images/train", "images/valid", "valid/top_losses"} <= set(tags["images"])
    if kind == "multilabel":
        assert any(t.startswith("valid/pr_curve/") for t in tags["tensors"])
        assert "valid/per_class/text_summary" in tags["tensors"]
    elif kind == "multihead":
        heads = ("grapheme_root", "vowel_diacritic", "consonant_diacritic")
        assert all(f"valid/confusion_matrix/{head}" in tags["images"] for head in heads)
    else:
        assert "valid/confusion_matrix" in tags["images"]


def test_a_missing_image_stops_before_training_with_the_file_named(tmp_path, capsys):
    flags, *_ = _images(tmp_path)
    (tmp_path / "train" / "img00007.png").unlink()
    assert main([*flags, *FAST, "--output-dir", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err
    assert "train.csv line 9: image file" in err and "img00007.png not found" in err
    assert not (tmp_path / "exp").exists()
