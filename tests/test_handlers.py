"""Handlers: freezing, the lr schedule per optimizer step, early stopping (valid score, start epoch, validations
inside epochs), progressive resizing."""

import logging

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from src.config import LoaderConfig, OptimConfig, StepConfig
from src.loaddata import build_loaders
from src.losses import cross_entropy
from src.training.engine import create_trainer, validation_filter
from src.training.evaluation import Selection
from src.training.handlers import (
    attach_early_stopping,
    attach_evaluation,
    attach_freezing,
    attach_lr_scheduler,
    attach_progress_bar,
    attach_progressive_resizing,
)
from src.training.optim import build_lr_scheduler, build_optimizer
from tests.helpers import CPU, TinyClassifier, backbone_classifier, fake_data, make_blobs, split

ACCURACY = Selection("valid", "accuracy", higher_is_better=True).score_function()


def test_freeze_leaves_the_backbone_unchanged_then_unfreeze_trains_it():
    torch.manual_seed(0)
    model = backbone_classifier()
    x, y = make_blobs(32, 4)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    optim = OptimConfig(optimizer="adamw", lr=1e-2, weight_decay=0.01, backbone_lr_mult=0.1, scheduler="onecycle")
    optimizer = build_optimizer(model, optim)
    trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss(), CPU)
    attach_lr_scheduler(trainer, None, build_lr_scheduler(optimizer, optim, 8, 2), 1)
    attach_freezing(trainer, model, freeze_epochs=1)
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
        attach_freezing(None, nn.Linear(2, 2), 1)


def test_schedule_steps_once_per_optimizer_step():
    model = TinyClassifier(num_classes=3)
    optim = OptimConfig(optimizer="sgd", lr=0.1, weight_decay=0, scheduler="onecycle")
    optimizer = build_optimizer(model, optim)
    x, y = make_blobs(8, 3, size=4)
    k, iterations = 2, 12
    trainer = create_trainer(model, optimizer, cross_entropy(), CPU, StepConfig(accumulation_steps=k))
    scheduler = build_lr_scheduler(optimizer, optim, total_steps=iterations // k, warmup_steps=2)
    attach_lr_scheduler(trainer, Engine(lambda e, b: None), scheduler, k)
    lrs = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: lrs.append(optimizer.param_groups[0]["lr"]))
    trainer.run([(x, y)] * iterations, max_epochs=1)
    assert all(lrs[i] == lrs[i + 1] for i in range(0, iterations, k))  # constant within a window
    assert max(lrs) == pytest.approx(0.1) and lrs[0] == pytest.approx(0.1 / 25)
    assert len(set(lrs)) == iterations // k


def test_early_stopping_reads_the_valid_score():
    trainer = Engine(lambda e, b: None)
    valid = Engine(lambda e, b: None)
    scores = iter([0.5, 0.6, 0.6, 0.55, 0.7, 0.9])

    @valid.on(Events.COMPLETED)
    def set_score(engine):
        engine.state.metrics["accuracy"] = next(scores)

    # set_score must run before early stopping reads it, so attach early stopping after.
    attach_early_stopping(trainer, valid, 2, ACCURACY)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: valid.run([0]))
    trainer.run([0], max_epochs=6)
    assert trainer.state.epoch == 4  # best 0.6 at epoch 2, no improvement at 3 and 4


def test_early_stopping_ignores_validations_before_its_start_epoch():
    trainer = Engine(lambda e, b: None)
    valid = Engine(lambda e, b: None)
    scores = iter([0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])  # a lucky early epoch, then a lower plateau

    @valid.on(Events.COMPLETED)
    def set_score(engine):
        engine.state.metrics["accuracy"] = next(scores)

    attach_early_stopping(trainer, valid, 2, ACCURACY, start_epoch=3)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: valid.run([0]))
    trainer.run([0], max_epochs=8)
    assert trainer.state.epoch == 5  # epoch 3 sets the score to beat; 4 and 5 do not (from epoch 1 it stops at 3)


def test_early_stopping_counts_validations_not_epochs():
    trainer = Engine(lambda e, b: None)
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(accuracy=0.5))  # never improves
    attach_evaluation(
        trainer,
        {"valid": (evaluator, [0])},
        Events.ITERATION_COMPLETED(event_filter=validation_filter(0.25, 16, 2)),
    )
    attach_early_stopping(trainer, evaluator, 2, ACCURACY)
    trainer.run(range(16), max_epochs=5)
    assert trainer.state.iteration == 12  # best at 4, no better at 8 and 12: stopped inside epoch 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batch_shape_changes_at_the_scheduled_epochs(num_workers):
    """The train batches and the evaluation batches switch size exactly at the listed epochs, also with
    worker processes (which would keep the old pipelines if they were persistent)."""
    data = fake_data(80, shape=(20, 20))
    train_idx, valid_idx = split(data, 4, 0)
    loader = LoaderConfig(
        img_size=16, img_size_schedule="24:1,12:3", batch_size=20, num_workers=num_workers, aug="none"
    )
    loaders = build_loaders(data, (train_idx, valid_idx), loader)
    seen: dict[int, set] = {}

    def step(engine, batch):
        seen.setdefault(engine.state.epoch, set()).add(tuple(batch[0].shape[1:]))

    trainer = Engine(step)
    attach_progressive_resizing(trainer, loaders, loader.img_size_at, seed=0)
    valid_shapes = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda: valid_shapes.append(tuple(next(iter(loaders.valid))[0].shape[1:]))
    )
    trainer.run(loaders.train, max_epochs=4)
    expected = [(1, 16, 16), (1, 24, 24), (1, 24, 24), (1, 12, 12)]
    assert [seen[epoch] for epoch in (1, 2, 3, 4)] == [{shape} for shape in expected]
    assert valid_shapes == expected
    assert trainer.state.iteration == 4 * len(loaders.train)  # no batch lost or repeated by the restarts


def test_the_progress_bar_shows_the_fold_the_epoch_and_the_whole_run_s_eta(capsys):
    trainer = Engine(lambda engine, batch: {"loss": torch.tensor(0.5)})
    attach_progress_bar(trainer, desc="fold 1 [2/5] epoch", interactive=True)
    trainer.run([0, 1, 2], max_epochs=2)
    shown = capsys.readouterr().err
    assert "fold 1 [2/5] epoch [2/2]" in shown and "loss=0.5" in shown and "run_eta=0.0 s" in shown


def test_progress_written_to_a_file_is_a_line_every_30_seconds_and_one_per_epoch(capsys, caplog):
    """Not a terminal: no bar (no carriage returns), a logged line when 30 s have passed and at each epoch's end."""
    now = [0.0]
    trainer = Engine(lambda engine, batch: now.__setitem__(0, now[0] + 7.0) or {"loss": torch.tensor(0.25)})
    attach_progress_bar(trainer, desc="fold 0 [1/5] epoch", interactive=False, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="src.training.handlers"):
        trainer.run(range(10), max_epochs=2)  # 20 iterations of 7 s
    lines = [r.getMessage() for r in caplog.records if r.name == "src.training.handlers"]
    assert "\r" not in capsys.readouterr().err
    # iteration 1 at 7 s (the first line), then the first iteration 30 s after the last line, and each epoch's end
    assert [line.split(":")[0] for line in lines] == [
        "fold 0 [1/5] epoch [1/2] iteration 1/10",  # 7 s
        "fold 0 [1/5] epoch [1/2] iteration 6/10",  # 42 s
        "fold 0 [1/5] epoch [1/2] iteration 10/10",  # 70 s, the epoch's end (28 s after the last line)
        "fold 0 [1/5] epoch [2/2] iteration 5/10",  # 105 s
        "fold 0 [1/5] epoch [2/2] iteration 10/10",  # 140 s, the epoch's end, once
    ]
    assert lines[-1].endswith("loss 0.25, run_eta 0.0 s")
