"""The engines: accumulation equals one large batch, clipping, mixup targets, AMP, convergence, evaluators, metrics
by hand, and when --val-every validates."""

import copy

import pytest
import torch
from ignite.engine import Engine, Events

from src.config import ModelConfig, OptimConfig, StepConfig
from src.losses import cross_entropy
from src.mixup import Mixup
from src.model import build_model
from src.targets import Head, Task
from src.training.engine import create_evaluator, create_trainer, make_metrics, validation_filter
from src.training.optim import build_optimizer
from tests.helpers import CPU, HEADS, TinyClassifier, TinyConvNet, make_blobs


def _train(model, optimizer, batches, accumulation_steps, **step):
    trainer = create_trainer(
        model, optimizer, cross_entropy(), CPU, StepConfig(accumulation_steps=accumulation_steps, **step)
    )
    trainer.run(batches, max_epochs=1)
    return trainer


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_accumulation_equals_one_large_batch(optimizer_name):
    torch.manual_seed(0)
    x, y = make_blobs(32, 4, size=8)
    model_a = TinyConvNet(num_classes=4)
    model_b = copy.deepcopy(model_a)
    optim = OptimConfig(optimizer=optimizer_name, lr=0.05, weight_decay=0.01)
    opt_a, opt_b = build_optimizer(model_a, optim), build_optimizer(model_b, optim)
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
        return cross_entropy()(logits, target)

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
    assert torch.isfinite(trainer.state.output["loss"])  # left on the device as a tensor


def _fit(model, x, y, epochs, lr, batch_size=16, channels_last=False):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]
    step = StepConfig(channels_last=channels_last)
    trainer = create_trainer(model, optimizer, cross_entropy(), CPU, step)
    trainer.run(batches, max_epochs=epochs)
    evaluator = create_evaluator(model, make_metrics(), CPU, step)
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
    model = build_model(ModelConfig(arch="effnet-b0", in_chans=1), 4).to(memory_format=torch.channels_last)
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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with a grad scaler needs CUDA")
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_trains_on_cuda(amp):
    device = torch.device("cuda")
    x, y = make_blobs(16, 3, size=8)
    model = TinyConvNet(num_classes=3).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, optimizer, cross_entropy(), device, StepConfig(amp=amp))
    assert trainer.state.scaler.is_enabled() == (amp == "fp16")  # a grad scaler for fp16 only
    before = [p.detach().clone() for p in model.parameters()]
    trainer.run([(x, y)] * 3, max_epochs=1)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _fired(val_every, epoch_length, accumulation_steps, epochs=2):
    trainer, fired = Engine(lambda e, b: None), []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(event_filter=validation_filter(val_every, epoch_length, accumulation_steps)),
        lambda e: fired.append(e.state.iteration),
    )
    trainer.run(range(epoch_length), max_epochs=epochs)
    return fired


@pytest.mark.parametrize(
    "val_every, epoch_length, accumulation_steps, expected",
    [
        (0.25, 16, 2, [4, 8, 12, 16, 20, 24, 28, 32]),  # four per epoch, every 2 optimizer steps
        (0.25, 15, 2, [4, 8, 12, 15, 20, 24, 28, 30]),  # windows straddle the epoch end: next boundary after 4
        (3, 10, 2, [6, 10, 12, 18, 20]),  # every 3 optimizer steps over the run, plus each epoch end
        (0.5, 10, 1, [5, 10, 15, 20]),
    ],
)
def test_validation_fires_the_expected_times_on_optimizer_steps(val_every, epoch_length, accumulation_steps, expected):
    fired = _fired(val_every, epoch_length, accumulation_steps)
    assert fired == expected
    epoch_ends = {epoch_length * k for k in (1, 2)}
    assert all(i % accumulation_steps == 0 for i in fired if i not in epoch_ends)


def _evaluate(task, y_pred, y):
    evaluator = create_evaluator(torch.nn.Identity(), make_metrics(task), CPU)
    evaluator.run([(y_pred, y)])
    return evaluator.state.metrics


def test_multihead_metrics_by_hand():
    # head root: rows 0, 1 right, row 2 wrong (2/3); head vowel: row 0 right only (1/3)
    y_pred = torch.tensor([[5.0, 0, 0, 5, 0], [0, 5, 0, 5, 0], [5, 0, 0, 5, 0]])  # (N, 3 + 2) logits
    y = torch.tensor([[0, 0], [1, 1], [2, 1]])
    metrics = _evaluate(HEADS, y_pred, y)
    assert metrics["accuracy_root"] == pytest.approx(2 / 3) and metrics["accuracy_vowel"] == pytest.approx(1 / 3)
    assert metrics["accuracy"] == pytest.approx((2 * 2 / 3 + 1 / 3) / 3)


def test_multilabel_metrics_by_hand():
    task = Task("multilabel", (Head("tags", ("a", "b", "c")),))
    y_pred = torch.tensor([[3.0, -3, 3], [3, 3, -3]])  # predicted tags: {a, c}, {a, b}
    y = torch.tensor([[1.0, 0, 1], [1, 0, 0]])
    metrics = _evaluate(task, y_pred, y)
    assert metrics["accuracy"] == pytest.approx(0.5)  # exact match: row 0 only
    assert metrics["label_accuracy"] == pytest.approx(5 / 6)  # one wrong decision of six
