"""The toolbox flags end to end, each with accumulation, mixup or resume: center loss, SWA, freezing, --val-every,
progressive resizing, --metric, ArcFace, the GRU."""

import csv
import signal

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.train import main
from src.training.checkpoints import read_checkpoint
from tests import helpers
from tests.helpers import TINY, epoch_checkpoint


def test_cli_center_loss_with_accumulation_mixup_and_resume(tmp_path):
    flags = ["--center-loss", "0.01", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "center", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    first = read_checkpoint([epoch_checkpoint(tmp_path / "center", 1)])[1]
    assert main(["--resume", str(tmp_path / "center"), "--epochs", "2"]) == 0
    second = read_checkpoint([epoch_checkpoint(tmp_path / "center", 2)])[1]
    assert first["center_loss"]["centers"].shape == (10, 1280)
    assert not torch.equal(first["center_loss"]["centers"], second["center_loss"]["centers"])  # trained on
    assert second["center_optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.5 / 0.01)  # alpha / lambda


def test_cli_swa_validates_saves_and_resumes(tmp_path):
    flags = ["--swa-start-epoch", "2", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "swa", *TINY]
    assert main([*flags, "--epochs", "2"]) == 0
    assert main(["--resume", str(tmp_path / "swa"), "--epochs", "3"]) == 0
    run_dir = tmp_path / "swa"
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["valid_swa_accuracy"] != "" for r in rows] == [False, True, True]
    state = read_checkpoint([epoch_checkpoint(run_dir, 3)])[1]
    assert state["swa_model"]["n_averaged"].item() == 2  # epochs 2 and 3, counted across the resume
    assert [p.name for p in run_dir.glob("swa_model_*.pt")] == ["swa_model_3.pt"]


def test_cli_freeze_with_backbone_lr_accumulation_mixup_and_resume(tmp_path):
    flags = ["--freeze-epochs", "1", "--backbone-lr-mult", "0.1", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "ft", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    first = read_checkpoint([epoch_checkpoint(tmp_path / "ft", 1)])[1]["optimizer"]
    assert main(["--resume", str(tmp_path / "ft"), "--epochs", "2"]) == 0
    second = read_checkpoint([epoch_checkpoint(tmp_path / "ft", 2)])[1]["optimizer"]
    backbone_ids = {i for g in first["param_groups"] if g["lr_mult"] == 0.1 for i in g["params"]}
    head_ids = {i for g in first["param_groups"] if g["lr_mult"] == 1.0 for i in g["params"]}
    assert backbone_ids and not backbone_ids & set(first["state"])  # never stepped while frozen
    assert head_ids <= set(first["state"])
    assert backbone_ids <= set(second["state"])  # stepped after unfreezing
    lrs = {g["lr_mult"]: g["lr"] for g in second["param_groups"]}
    assert lrs[0.1] == pytest.approx(0.1 * lrs[1.0])


def test_cli_validates_inside_the_epoch(tmp_path):
    # TINY: 160 train images, batch 32 -> 5 iterations per epoch; half an epoch with 2-batch windows = 2 iterations.
    flags = ["--val-every", "0.5", "--accumulation-steps", "2", "--epochs", "1", *TINY]
    assert main([*flags, "--output-dir", str(tmp_path), "--run-name", "mid"]) == 0
    events = EventAccumulator(str(tmp_path / "mid"))
    events.Reload()
    assert [event.step for event in events.Scalars("valid/accuracy")] == [2, 4, 5]
    best = [p.name for p in (tmp_path / "mid").glob("best_model_*.pt")]
    assert best and all(int(name.split("_")[2]) in (2, 4, 5) for name in best)  # numbered by iteration


def test_cli_schedule_records_the_size_and_resumes_at_the_right_size(tmp_path):
    flags = ["--output-dir", str(tmp_path), "--run-name", "prog", "--img-size-schedule", "24:0,32:1", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    assert main(["--resume", str(tmp_path / "prog"), "--epochs", "2"]) == 0
    with (tmp_path / "prog" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["epoch"]), int(r["img_size"])) for r in rows] == [(1, 24), (2, 32)]
    assert (epoch_checkpoint(tmp_path / "prog", 2)).exists()


def test_cli_selects_by_the_metric(tmp_path):
    flags = ["--metric", "log_loss", "--epochs", "2", "--output-dir", str(tmp_path), "--run-name", "m", *TINY]
    assert main(flags) == 0
    with (tmp_path / "m" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["valid_log_loss"]) for r in rows]
    best_epoch = int(np.argmin(losses)) + 1
    best = list((tmp_path / "m").glob("best_model_*_valid_log_loss=*.pt"))
    assert best and any(p.name.startswith(f"best_model_{best_epoch}_") for p in best)


def test_cli_arcface_with_accumulation_mixup_and_resume(tmp_path):
    flags = ["--head", "arcface", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "arc", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    assert main(["--resume", str(tmp_path / "arc"), "--epochs", "2"]) == 0
    state = read_checkpoint([epoch_checkpoint(tmp_path / "arc", 2)])[1]["model"]
    assert state["fc.margin_loss.W"].shape == (1280, 10)  # effnet-b0 features x classes
    with (tmp_path / "arc" / "history.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]


def test_cli_gru_learns_the_strokes(tmp_path):
    folder = helpers.stroke_csvs(tmp_path, per_class=40)  # 3 classes told apart by their number of strokes
    flags = ["--arch", "gru", "--train-csv", str(folder / "*.csv"), "--label-col", "word", "--id-col", "key_id"]
    flags += ["--hidden-size", "32", "--num-layers", "1", "--epochs", "6", "--batch-size", "16", "--lr", "1e-2"]
    assert main([*flags, "--no-progress", "--output-dir", str(tmp_path), "--run-name", "gru"]) == 0
    with (tmp_path / "gru" / "history.csv").open() as f:
        accuracy = [float(r["valid_accuracy"]) for r in csv.DictReader(f)]
    assert accuracy[0] < 0.9 and max(accuracy) >= 0.9  # learns: from near chance to >= 90% of 24 drawings
    tags = helpers.tensorboard_tags(tmp_path / "gru")["images"]  # point sequences: no image grids or top losses
    assert "valid/confusion_matrix" in tags and not any(t.startswith("images/") or "top_losses" in t for t in tags)


MIXES = {
    "cutmix": ["--cutmix-alpha", "1.0", "--mixup-alpha", "0.4", "--mix-prob", "0.8", "--switch-prob", "0.5"],
    "manifold": ["--mixup-alpha", "0.4", "--mixup-k", "3", "--mixup-at", "features", "--arch", "effnet-b0"],
    "lsoftmax": ["--loss", "lsoftmax", "--margin", "2", "--lsoftmax-gamma", "0.5", "--mixup-alpha", "0.4"],
}


@pytest.mark.parametrize("mix", MIXES)
def test_cli_mixes_with_label_smoothing_accumulation_and_resume(tmp_path, monkeypatch, mix):
    flags = ["--arch", "resnet18", *MIXES[mix], "--label-smoothing", "0.1", "--accumulation-steps", "2"]
    flags += [*TINY, "--no-pictures"]
    flags += ["--output-dir", str(tmp_path), "--epochs", "2"]
    assert main([*flags, "--run-name", "straight"]) == 0
    with monkeypatch.context() as patch:
        helpers.signal_at(patch, 7, signal.SIGTERM)  # inside epoch 2
        assert main([*flags, "--run-name", "resumed"]) == 128 + signal.SIGTERM
    assert main([*flags, "--run-name", "resumed"]) == 0
    histories = [
        np.genfromtxt(tmp_path / name / "history.csv", delimiter=",", names=True) for name in ("straight", "resumed")
    ]
    for column in ("train_loss", "valid_accuracy", "valid_loss"):  # the mixer's draws continue across the resume
        assert np.array_equal(histories[0][column], histories[1][column]), column  # (and L-softmax's annealing)
    if mix == "lsoftmax":
        state = read_checkpoint([epoch_checkpoint(tmp_path / "resumed", 2)])[1]["model"]
        assert state["fc.margin_loss.W"].shape == (512, 10) and not any(k.startswith("fc.bias") for k in state)
