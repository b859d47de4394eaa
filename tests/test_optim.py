"""Optimizers and schedules: parameter groups with a backbone multiplier, every schedule's shape and resume."""

import pytest
from ignite.engine import Engine, Events

from src.config import OptimConfig
from src.training.optim import build_lr_scheduler, build_optimizer, param_groups
from tests.helpers import TinyClassifier, backbone_classifier


def test_backbone_groups_get_the_multiplied_lr_and_every_parameter_once():
    model = backbone_classifier()
    optimizer = build_optimizer(model, OptimConfig(optimizer="adamw", lr=1e-2, weight_decay=0.05, backbone_lr_mult=0.1))
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
    optim = OptimConfig(optimizer="sgd", lr=0.1, weight_decay=0, backbone_lr_mult=0.25, scheduler=name)
    optimizer = build_optimizer(backbone_classifier(), optim)
    scheduler = build_lr_scheduler(optimizer, optim, total_steps=20, warmup_steps=4)
    for step in range(20):
        scheduler(None)
        if step >= 4:  # after the warmup (whose start value is shared by the step schedule)
            lrs = {group["lr_mult"]: group["lr"] for group in optimizer.param_groups}
            assert lrs[0.25] == pytest.approx(0.25 * lrs[1.0])
    state = scheduler.state_dict()
    fresh = build_optimizer(backbone_classifier(), optim)
    build_lr_scheduler(fresh, optim, total_steps=20, warmup_steps=4).load_state_dict(state)  # resumable


@pytest.mark.parametrize("warmup_steps", [0, 4])
def test_step_schedule_divides_the_lr_by_ten_at_half_and_three_quarters(warmup_steps):
    model = TinyClassifier(num_classes=3)
    optim = OptimConfig(optimizer="sgd", lr=0.1, weight_decay=0, scheduler="step")
    optimizer = build_optimizer(model, optim)
    scheduler = build_lr_scheduler(optimizer, optim, total_steps=20, warmup_steps=warmup_steps)
    engine = Engine(lambda e, b: None)
    lrs = []
    engine.add_event_handler(Events.ITERATION_STARTED, scheduler)
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: lrs.append(optimizer.param_groups[0]["lr"]))
    engine.run([0] * 20, max_epochs=1)
    assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.01)  # step 10 of 20
    assert lrs[14] == pytest.approx(0.01) and lrs[15] == pytest.approx(0.001)  # step 15 of 20
    if warmup_steps:
        assert lrs[0] == pytest.approx(0.1 / 25) and lrs[0] < lrs[2] < lrs[4] == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["onecycle", "cosine", "step"])
def test_schedules_resume_from_their_state_dict(name):
    def run(scheduler, optimizer, iterations, state=None):
        engine = Engine(lambda e, b: None)
        lrs = []
        engine.add_event_handler(Events.ITERATION_STARTED, scheduler)
        engine.add_event_handler(Events.ITERATION_STARTED, lambda e: lrs.append(optimizer.param_groups[0]["lr"]))
        engine.run([0] * iterations, max_epochs=1)
        return lrs

    def fresh():
        optim = OptimConfig(optimizer="sgd", lr=0.1, weight_decay=0, scheduler=name)
        optimizer = build_optimizer(TinyClassifier(num_classes=3), optim)
        return build_lr_scheduler(optimizer, optim, total_steps=20, warmup_steps=4), optimizer

    whole = run(*fresh(), 20)
    first, optimizer = fresh()
    head = run(first, optimizer, 12)
    second, optimizer2 = fresh()
    second.load_state_dict(first.state_dict())
    optimizer2.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]
    tail = run(second, optimizer2, 8)
    assert head + tail == pytest.approx(whole)
