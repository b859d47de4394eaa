"""TensorBoard's pictures of a tiny run, read back with tensorboard's event reader."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.train import main
from tests.helpers import TINY, tensorboard_image, tensorboard_tags


def test_a_run_logs_image_grids_confusion_matrix_top_losses_and_hparams(tmp_path):
    flags = [*TINY, "--arch", "resnet18", "--epochs", "2", "--output-dir", str(tmp_path), "--top-losses", "8"]
    assert main([*flags, "--run-name", "pictures", "--lr", "1e-3"]) == 0
    run = tmp_path / "pictures"
    tags = tensorboard_tags(run)
    assert {"images/train", "images/valid", "valid/confusion_matrix", "valid/top_losses"} <= set(tags["images"])
    assert "valid/per_class/text_summary" in tags["tensors"]
    grid = tensorboard_image(run, "images/valid")  # 16 de-normalised digits: white strokes on black
    assert grid.shape == (2 + 2 * 34, 2 + 8 * 34, 3) and 10 < grid.mean() < 100
    top = tensorboard_image(run, "valid/top_losses")  # 8 tiles, 4 per row
    assert top.shape[1] == 4 * 132 and top.shape[0] == 2 * (128 + 12 * 3 + 4 + 4)

    hparams = EventAccumulator(str(run / "hparams"))
    hparams.Reload()
    summary = json.loads((run / "summary.json").read_text())
    best = hparams.Scalars("hparam/best_valid_accuracy")[-1].value
    assert abs(best - summary["best_valid_score"]) < 1e-6
    start = hparams.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert all(name in start for name in (b"arch", b"lr", b"epochs", b"resnet18"))


def test_no_pictures_logs_the_scalars_only(tmp_path):
    flags = [*TINY, "--arch", "resnet18", "--epochs", "1", "--output-dir", str(tmp_path), "--no-pictures"]
    assert main([*flags, "--run-name", "plain"]) == 0
    tags = tensorboard_tags(tmp_path / "plain")
    assert tags["images"] == [] and "valid/accuracy" in tags["scalars"]
