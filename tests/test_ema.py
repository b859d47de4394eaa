import copy

import pytest
import torch
from ignite.engine import Events

from src.engine import create_trainer
from src.handlers import attach_ema, build_ema
from src.losses import build_criterion
from tests.conftest import TinyConvNet, make_blobs

CPU = torch.device("cpu")


def _weights_after_each_optimizer_step(decay, accumulation_steps, micro_batches, warmup_steps=0):
    """Trains TinyConvNet with SGD under an EMA; returns the initial weights, the weights after each optimizer
    step (recorded independently of the EMA handler) and the EMA model."""
    torch.manual_seed(0)
    model = TinyConvNet(num_classes=3)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = create_trainer(model, optimizer, build_criterion("ce"), CPU, accumulation_steps=accumulation_steps)
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
