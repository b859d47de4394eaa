"""Weight averages: EMA once per optimizer step (closed form), its warmup and decay check; SWA of epoch-end
weights with BatchNorm statistics recomputed."""

import copy

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from src.config import StepConfig
from src.losses import cross_entropy
from src.training.averaging import attach_ema, attach_swa, build_ema, build_swa, from_epoch
from src.training.engine import create_evaluator, create_trainer, make_metrics
from src.training.handlers import attach_evaluation
from tests.helpers import CPU, TinyConvNet, make_blobs


def _weights_after_each_optimizer_step(decay, accumulation_steps, micro_batches, warmup_steps=0):
    """Trains TinyConvNet with SGD under an EMA; returns the initial weights, the weights after each optimizer
    step (recorded independently of the EMA handler) and the EMA model."""
    torch.manual_seed(0)
    model = TinyConvNet(num_classes=3)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = create_trainer(
        model, optimizer, cross_entropy(), CPU, StepConfig(accumulation_steps=accumulation_steps)
    )
    ema = build_ema(model, decay, warmup_steps=warmup_steps)
    attach_ema(trainer, ema, accumulation_steps)
    steps = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(every=accumulation_steps), lambda: steps.append(copy.deepcopy(model.state_dict()))
    )
    x, y = make_blobs(8 * micro_batches, 3, size=8)
    trainer.run([(x[i : i + 8], y[i : i + 8]) for i in range(0, len(x), 8)], max_epochs=1)
    return initial, steps, ema.ema_model


def test_ema_equals_the_closed_form_once_per_optimizer_step():
    decay = 0.8
    initial, steps, ema_model = _weights_after_each_optimizer_step(decay, accumulation_steps=2, micro_batches=6)
    assert len(steps) == 3  # 6 micro-batches, 2 per optimizer step
    for name, value in ema_model.state_dict().items():
        # ema_t = decay * ema_{t-1} + (1 - decay) * w_t, ema_0 = w_0:
        # ema_3 = d^3 w_0 + (1 - d) (d^2 w_1 + d w_2 + w_3)
        expected = decay**3 * initial[name] + (1 - decay) * sum(
            decay ** (len(steps) - 1 - t) * step[name] for t, step in enumerate(steps)
        )
        assert torch.allclose(value, expected, atol=1e-6), name
    assert not torch.allclose(ema_model.fc.weight, steps[-1]["fc.weight"])  # an average, not a copy


def test_ema_warmup_starts_from_a_copy_of_the_trained_weights():
    initial, steps, ema_model = _weights_after_each_optimizer_step(0.99, 1, micro_batches=1, warmup_steps=10)
    # The first update uses momentum 1: the EMA equals the weights after step 1, not the random init.
    for name, value in ema_model.state_dict().items():
        assert torch.allclose(value, steps[0][name]), name
    assert not torch.allclose(ema_model.fc.weight, initial["fc.weight"])


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_ema_rejects_a_decay_outside_zero_one(decay):
    with pytest.raises(ValueError, match="--ema"):
        build_ema(TinyConvNet(), decay)


def test_swa_averages_epoch_end_weights_and_recomputes_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(12, 1, 4, 4) * 3 + 5
    batches = [(x[:6], torch.zeros(6, dtype=torch.long)), (x[6:], torch.zeros(6, dtype=torch.long))]
    model(x)  # materialise the lazy layer
    swa = build_swa(model)

    snapshots = []

    def step(engine, batch):  # a fake "training step": move every weight by a known amount
        with torch.no_grad():
            for p in model.parameters():
                p.add_(engine.state.iteration * 0.1)

    trainer = Engine(step)
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda: snapshots.append([p.detach().clone() for p in model.parameters()])
    )
    evaluator = create_evaluator(swa, make_metrics(), CPU)
    evaluated = []
    evaluator.add_event_handler(Events.COMPLETED, lambda: evaluated.append(trainer.state.epoch))
    attach_swa(trainer, swa, model, 2, batches, CPU)
    attach_evaluation(trainer, {"valid_swa": (evaluator, batches)}, from_epoch(2))
    trainer.run(batches, max_epochs=3)

    averaged = [(a + b) / 2 for a, b in zip(snapshots[1], snapshots[2])]  # epochs 2 and 3 (start_epoch=2)
    assert all(torch.allclose(p, q) for p, q in zip(swa.module.parameters(), averaged))
    assert swa.n_averaged.item() == 2
    conv_out = swa.module[0](x).transpose(0, 1).reshape(2, -1)  # BN input of the averaged conv, per channel
    assert torch.allclose(swa.module[1].running_mean, conv_out.mean(1), atol=1e-4)  # update_bn: exact mean
    assert evaluated == [2, 3] and "accuracy" in evaluator.state.metrics  # validated after each averaging


def test_swa_keeps_every_buffer_on_the_models_device():
    # torch's AveragedModel makes its n_averaged counter on the CPU unless told a device; under nccl that one CPU
    # buffer fails the broadcast of src.utils.distributed.sync_buffers. The meta device stands in for a GPU here.
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).to("meta")
    devices = {t.device.type for t in [*build_swa(model).parameters(), *build_swa(model).buffers()]}
    assert devices == {"meta"}
    assert {b.device.type for b in torch.optim.swa_utils.AveragedModel(model).buffers()} == {"cpu", "meta"}


@pytest.mark.parametrize("warmup_steps", [0, 3])
def test_foreach_ema_is_bit_for_bit_ignites_ema(warmup_steps):
    from ignite.handlers import EMAHandler

    def run(handler_class) -> dict:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
        model(torch.zeros(2, 1, 8, 8))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
        trainer = create_trainer(model, optimizer, cross_entropy(), CPU, StepConfig())
        kwargs = {"momentum_warmup": 1.0, "warmup_iters": warmup_steps} if warmup_steps else {}
        ema = handler_class(model, momentum=0.1, handle_buffers="update", **kwargs)
        attach_ema(trainer, ema, 1)
        x, y = make_blobs(40, 3, size=8)
        trainer.run([(x[i : i + 8], y[i : i + 8]) for i in range(0, 40, 8)], max_epochs=2)
        return ema.ema_model.state_dict()

    ours, ignites = run(type(build_ema(nn.Linear(1, 1), 0.9))), run(EMAHandler)
    assert ours.keys() == ignites.keys()
    for name in ours:
        assert torch.equal(ours[name], ignites[name]), name
    assert ours["1.num_batches_tracked"].item() == 11  # shared with the model: its 10 steps and the LazyLinear probe
