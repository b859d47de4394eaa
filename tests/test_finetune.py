"""Fine-tuning schedule: --freeze-epochs and --backbone-lr-mult (optimizer groups, schedules, CLI with resume)."""

import logging

import pytest
import torch
from ignite.engine import Events
from torch import nn

from src.engine import create_trainer
from src.handlers import attach_freezing, attach_lr_scheduler
from src.model import Classifier
from src.optim import build_lr_scheduler, build_optimizer, param_groups
from src.train import main
from tests.conftest import make_blobs
from tests.test_cli import TINY


def _classifier() -> Classifier:
    backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    return Classifier(backbone, num_features=8, num_classes=4)


def test_backbone_groups_get_the_multiplied_lr_and_every_parameter_once():
    model = _classifier()
    optimizer = build_optimizer(model, "adamw", lr=1e-2, weight_decay=0.05, backbone_lr_mult=0.1)
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    backbone = {id(p) for p in model.backbone.parameters()}
    for group in optimizer.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1  # no group mixes backbone and head
        expected_lr = 1e-3 if in_backbone == {True} else 1e-2
        assert group["lr"] == pytest.approx(expected_lr)
        assert group["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in group["params"]) else 0.05)
    assert len(param_groups(model, 0.05)) == 2  # without a multiplier: decay / no decay only


@pytest.mark.parametrize("name", ["onecycle", "cosine", "step"])
def test_every_schedule_keeps_the_backbone_ratio(name):
    optimizer = build_optimizer(_classifier(), "sgd", lr=0.1, weight_decay=0, backbone_lr_mult=0.25)
    scheduler = build_lr_scheduler(name, optimizer, lr=0.1, total_steps=20, warmup_steps=4)
    for step in range(20):
        scheduler(None)
        if step >= 4:  # after the warmup (whose start value is shared by the step schedule)
            lrs = {group["lr_mult"]: group["lr"] for group in optimizer.param_groups}
            assert lrs[0.25] == pytest.approx(0.25 * lrs[1.0])
    state = scheduler.state_dict()
    fresh = build_optimizer(_classifier(), "sgd", lr=0.1, weight_decay=0, backbone_lr_mult=0.25)
    build_lr_scheduler(name, fresh, lr=0.1, total_steps=20, warmup_steps=4).load_state_dict(state)  # resumable


def test_freeze_leaves_the_backbone_unchanged_then_unfreeze_trains_it():
    torch.manual_seed(0)
    model = _classifier()
    x, y = make_blobs(32, 4)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    optimizer = build_optimizer(model, "adamw", lr=1e-2, weight_decay=0.01, backbone_lr_mult=0.1)
    trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss(), torch.device("cpu"))
    attach_lr_scheduler(trainer, None, build_lr_scheduler("onecycle", optimizer, 1e-2, 8, 2), 1)
    attach_freezing(trainer, model, freeze_epochs=1, logger=logging.getLogger("test"))
    snapshots = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}),
    )
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.run(batches, max_epochs=2)
    weights = [k for k, _ in model.named_parameters()]
    backbone = [k for k in weights if k.startswith("backbone.")]
    head = [k for k in weights if k.startswith("fc.")]
    assert all(torch.equal(snapshots[0][k], start[k]) for k in backbone)  # frozen in epoch 1
    assert all(not torch.equal(snapshots[0][k], start[k]) for k in head)  # the head trained
    assert all(not torch.equal(snapshots[1][k], snapshots[0][k]) for k in backbone)  # unfrozen in epoch 2


def test_freeze_needs_a_backbone():
    with pytest.raises(ValueError, match="backbone"):
        attach_freezing(None, nn.Linear(2, 2), 1, logging.getLogger("test"))


def test_cli_freeze_with_backbone_lr_accumulation_mixup_and_resume(tmp_path):
    flags = ["--freeze-epochs", "1", "--backbone-lr-mult", "0.1", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "ft", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    first = torch.load(tmp_path / "ft" / "checkpoint_1.pt", weights_only=False)["optimizer"]
    assert main(["--resume", str(tmp_path / "ft"), "--epochs", "2"]) == 0
    second = torch.load(tmp_path / "ft" / "checkpoint_2.pt", weights_only=False)["optimizer"]
    backbone_ids = {i for g in first["param_groups"] if g["lr_mult"] == 0.1 for i in g["params"]}
    head_ids = {i for g in first["param_groups"] if g["lr_mult"] == 1.0 for i in g["params"]}
    assert backbone_ids and not backbone_ids & set(first["state"])  # never stepped while frozen
    assert head_ids <= set(first["state"])
    assert backbone_ids <= set(second["state"])  # stepped after unfreezing
    lrs = {g["lr_mult"]: g["lr"] for g in second["param_groups"]}
    assert lrs[0.1] == pytest.approx(0.1 * lrs[1.0])
