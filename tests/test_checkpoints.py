"""Checkpoints: the best models and the last full state, resumed exactly; a crash while saving loses nothing."""

import os

import pytest
import torch
from ignite.engine import Events

from src.config import OptimConfig
from src.losses import cross_entropy
from src.tracking.rundir import checkpoints
from src.training.checkpoints import attach_best_checkpoint, attach_last_checkpoint, read_checkpoint, resume_from
from src.training.engine import create_evaluator, create_trainer, make_metrics
from src.training.evaluation import Selection
from src.training.optim import build_lr_scheduler, build_optimizer
from tests.helpers import CPU, TinyConvNet, make_blobs


def _setup(run_dir, seed=0):
    torch.manual_seed(seed)
    model = TinyConvNet(num_classes=3)
    optim = OptimConfig(optimizer="adamw", lr=0.01, weight_decay=0.01, scheduler="cosine")
    optimizer = build_optimizer(model, optim)
    scheduler = build_lr_scheduler(optimizer, optim, total_steps=12, warmup_steps=2)
    trainer = create_trainer(model, optimizer, cross_entropy(), CPU)
    trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    valid = create_evaluator(model, make_metrics(), CPU)
    x, y = make_blobs(24, 3, size=8)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: valid.run(batches))
    best = attach_best_checkpoint(trainer, valid, model, run_dir, 2, Selection("valid", "accuracy", True))
    to_save = {"trainer": trainer, "model": model, "optimizer": optimizer, "lr_scheduler": scheduler}
    to_save["best_checkpoint"] = best  # its list of kept files is resumed too
    last = attach_last_checkpoint(trainer, to_save, run_dir)
    return trainer, model, optimizer, to_save, batches, last


def test_checkpoint_then_resume_continues_with_the_same_state(tmp_path):
    trainer, model, optimizer, _, batches, _ = _setup(tmp_path)
    trainer.run(batches, max_epochs=2)
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint_6.pt", "checkpoint_3.pt"]  # the two newest
    assert len(list(tmp_path.glob("best_model_*valid_accuracy=*.pt"))) >= 1
    saved_optimizer = optimizer.state_dict()
    saved_lr = optimizer.param_groups[0]["lr"]

    trainer2, model2, optimizer2, to_save2, batches2, last2 = _setup(tmp_path, seed=1)  # different init
    assert resume_from(read_checkpoint(checkpoints(tmp_path))[1], to_save2, last2) == []
    assert (trainer2.state.epoch, trainer2.state.iteration) == (2, 6)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    state2 = optimizer2.state_dict()
    assert state2["state"].keys() == saved_optimizer["state"].keys()
    for key, value in saved_optimizer["state"].items():
        assert torch.equal(value["exp_avg"], state2["state"][key]["exp_avg"])
        assert value["step"] == state2["state"][key]["step"]
    assert optimizer2.param_groups[0]["lr"] == saved_lr

    epochs_seen = []
    trainer2.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_seen.append(e.state.epoch))
    trainer2.run(batches2, max_epochs=4)
    assert epochs_seen == [3, 4]
    assert trainer2.state.iteration == 12
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint_12.pt", "checkpoint_9.pt"]


def test_a_crash_while_saving_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    trainer, model, _, _, batches, _ = _setup(tmp_path)
    trainer.run(batches, max_epochs=1)
    good = torch.load(tmp_path / "checkpoint_3.pt", weights_only=True)

    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        if "trainer" in obj:  # the full-state checkpoint of epoch 2: write half a file, then die
            real_save(obj, f, *args, **kwargs)
            os.truncate(f, 10)
            raise KeyboardInterrupt
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(batches, max_epochs=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert not (tmp_path / "checkpoint_6.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("best_")) == ["checkpoint_3.pt"]
    reloaded = torch.load(tmp_path / "checkpoint_3.pt", weights_only=True)
    assert reloaded["trainer"]["iteration"] == good["trainer"]["iteration"] == 3  # epoch 1 of 3 batches
    for key, value in good["model"].items():
        assert torch.equal(value, reloaded["model"][key])


def test_a_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, caplog):
    trainer, _, _, _, batches, _ = _setup(tmp_path)
    trainer.run(batches, max_epochs=2)
    newest, previous = checkpoints(tmp_path)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    path, state = read_checkpoint(checkpoints(tmp_path))
    assert path == previous and state["trainer"]["iteration"] == 3
    assert f"{newest} cannot be read" in caplog.text
    previous.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="no readable checkpoint among checkpoint_6.pt, checkpoint_3.pt"):
        read_checkpoint(checkpoints(tmp_path))


def test_a_checkpoint_of_another_model_names_both_shapes(tmp_path):
    trainer, _, _, _, batches, _ = _setup(tmp_path)
    trainer.run(batches, max_epochs=1)
    _, state = read_checkpoint(checkpoints(tmp_path))
    other = {"trainer": trainer, "model": TinyConvNet(num_classes=5)}
    with pytest.raises(ValueError, match=r"'fc.weight' is \(3, \d+\) there and \(5, \d+\) here"):
        resume_from(state, other)
