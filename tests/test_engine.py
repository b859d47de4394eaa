import copy

import pytest
import torch
from ignite.engine import Engine, Events

from src.engine import create_evaluator, create_trainer, make_metrics
from src.handlers import attach_early_stopping, attach_lr_scheduler
from src.losses import build_criterion
from src.mixup import Mixup
from src.model import build_model
from src.optim import build_lr_scheduler, build_optimizer
from tests.conftest import TinyClassifier, TinyConvNet, make_blobs

CPU = torch.device("cpu")


def _train(model, optimizer, batches, accumulation_steps, **kwargs):
    trainer = create_trainer(
        model, optimizer, build_criterion("ce"), CPU, accumulation_steps=accumulation_steps, **kwargs
    )
    trainer.run(batches, max_epochs=1)
    return trainer


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_accumulation_equals_one_large_batch(optimizer_name):
    torch.manual_seed(0)
    x, y = make_blobs(32, 4, size=8)
    model_a = TinyConvNet(num_classes=4)
    model_b = copy.deepcopy(model_a)
    opt_a = build_optimizer(model_a, optimizer_name, lr=0.05, weight_decay=0.01)
    opt_b = build_optimizer(model_b, optimizer_name, lr=0.05, weight_decay=0.01)
    micro = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]  # 4 micro-batches of 8
    _train(model_a, opt_a, micro, accumulation_steps=4)
    _train(model_b, opt_b, [(x, y)], accumulation_steps=1)  # one batch of 32
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert any(not torch.equal(a, b) for a, b in zip(TinyConvNet(num_classes=4).parameters(), model_a.parameters()))


def test_no_step_before_the_window_is_complete():
    x, y = make_blobs(24, 3, size=8)
    model = TinyConvNet(num_classes=3)
    before = copy.deepcopy(model.state_dict())
    _train(
        model, torch.optim.SGD(model.parameters(), lr=0.1), [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)], 4
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_clip_grad_norm_bounds_the_update():
    x, y = make_blobs(16, 3, size=8)
    model = TinyConvNet(num_classes=3)
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, torch.optim.SGD(model.parameters(), lr=1.0), [(x, y)], 1, clip_grad_norm=1e-3)
    delta = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert 0 < delta <= 1e-3 + 1e-7


def test_trainer_passes_soft_targets_with_mixup():
    seen = []

    def criterion(logits, target):
        seen.append(target)
        return build_criterion("ce")(logits, target)

    x, y = make_blobs(8, 3, size=8)
    model = TinyClassifier(num_classes=3)
    trainer = create_trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), criterion, CPU, mixup=Mixup(0.4, 3, seed=0)
    )
    trainer.run([(x, y)], max_epochs=1)
    assert seen[0].shape == (8, 3) and torch.allclose(seen[0].sum(1), torch.ones(8))


def test_bf16_autocast_trains_on_cpu():
    x, y = make_blobs(8, 3, size=8)
    model = TinyConvNet(num_classes=3)
    trainer = _train(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)], 1, amp="bf16")
    assert torch.isfinite(torch.tensor(trainer.state.output["loss"]))


def _fit(model, x, y, epochs, lr, batch_size=16, channels_last=False):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]
    trainer = create_trainer(model, optimizer, build_criterion("ce"), CPU, channels_last=channels_last)
    trainer.run(batches, max_epochs=epochs)
    evaluator = create_evaluator(model, make_metrics(), CPU, channels_last=channels_last)
    evaluator.run(batches)
    return evaluator.state.metrics


def test_tiny_model_converges():
    torch.manual_seed(0)
    x, y = make_blobs(64, 4, size=8)
    metrics = _fit(TinyConvNet(num_classes=4), x, y, epochs=60, lr=0.02)
    assert metrics["accuracy"] == 1.0
    assert metrics["loss"] < 0.1


def test_effnet_b0_overfits_a_small_set():
    torch.manual_seed(0)
    x, y = make_blobs(32, 4, size=32)
    model = build_model("effnet-b0", num_classes=4, in_chans=1).to(memory_format=torch.channels_last)
    metrics = _fit(model, x, y, epochs=30, lr=3e-3, channels_last=True)  # eval-mode BN needs ~25 epochs here
    assert metrics["accuracy"] == 1.0


def test_evaluator_metrics_cover_the_whole_loader():
    torch.manual_seed(0)
    model = TinyClassifier(num_classes=3)
    x, y = make_blobs(30, 3, size=8)
    batches = [(x[i : i + 7], y[i : i + 7]) for i in range(0, 30, 7)]
    evaluator = create_evaluator(model, make_metrics(), CPU)
    evaluator.run(batches)
    with torch.no_grad():
        logits = model(x)
    assert evaluator.state.metrics["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert evaluator.state.metrics["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5
    )


def test_schedule_steps_once_per_optimizer_step():
    model = TinyClassifier(num_classes=3)
    optimizer = build_optimizer(model, "sgd", lr=0.1, weight_decay=0)
    x, y = make_blobs(8, 3, size=4)
    k, iterations = 2, 12
    trainer = create_trainer(model, optimizer, build_criterion("ce"), CPU, accumulation_steps=k)
    scheduler = build_lr_scheduler("onecycle", optimizer, lr=0.1, total_steps=iterations // k, warmup_steps=2)
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
    attach_early_stopping(trainer, valid, patience=2)
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

    attach_early_stopping(trainer, valid, patience=2, start_epoch=3)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: valid.run([0]))
    trainer.run([0], max_epochs=8)
    assert trainer.state.epoch == 5  # epoch 3 sets the score to beat; 4 and 5 do not (from epoch 1 it stops at 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with a grad scaler needs CUDA")
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_trains_on_cuda(amp):
    device = torch.device("cuda")
    x, y = make_blobs(16, 3, size=8)
    model = TinyConvNet(num_classes=3).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    trainer = create_trainer(model, optimizer, build_criterion("ce"), device, amp=amp, scaler=scaler)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.run([(x, y)] * 3, max_epochs=1)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("warmup_steps", [0, 4])
def test_step_schedule_divides_the_lr_by_ten_at_half_and_three_quarters(warmup_steps):
    model = TinyClassifier(num_classes=3)
    optimizer = build_optimizer(model, "sgd", lr=0.1, weight_decay=0)
    scheduler = build_lr_scheduler("step", optimizer, lr=0.1, total_steps=20, warmup_steps=warmup_steps)
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
        optimizer = build_optimizer(TinyClassifier(num_classes=3), "sgd", lr=0.1, weight_decay=0)
        return build_lr_scheduler(name, optimizer, lr=0.1, total_steps=20, warmup_steps=4), optimizer

    whole = run(*fresh(), 20)
    first, optimizer = fresh()
    head = run(first, optimizer, 12)
    second, optimizer2 = fresh()
    second.load_state_dict(first.state_dict())
    optimizer2.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]
    tail = run(second, optimizer2, 8)
    assert head + tail == pytest.approx(whole)
