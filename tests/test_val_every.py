"""--val-every: validation inside epochs, on accumulation boundaries; early stopping counts validations."""

import pytest
from ignite.engine import Engine, Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.config import parse_config
from src.engine import validation_filter
from src.handlers import attach_early_stopping, attach_evaluation
from src.train import main
from tests.test_cli import TINY


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


@pytest.mark.parametrize("bad", ["0", "-0.5", "1.5"])
def test_bad_val_every_is_named(bad):
    with pytest.raises(ValueError, match="--val-every"):
        parse_config(["--val-every", bad], environ={})


def test_early_stopping_counts_validations_not_epochs():
    trainer = Engine(lambda e, b: None)
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(accuracy=0.5))  # never improves
    attach_evaluation(
        trainer,
        {"valid": (evaluator, [0])},
        Events.ITERATION_COMPLETED(event_filter=validation_filter(0.25, 16, 2)),
    )
    attach_early_stopping(trainer, evaluator, patience=2)
    trainer.run(range(16), max_epochs=5)
    assert trainer.state.iteration == 12  # best at 4, no better at 8 and 12: stopped inside epoch 1


def test_cli_validates_inside_the_epoch(tmp_path):
    # TINY: 160 train images, batch 32 -> 5 iterations per epoch; half an epoch with 2-batch windows = 2 iterations.
    flags = ["--val-every", "0.5", "--accumulation-steps", "2", "--epochs", "1", *TINY]
    assert main([*flags, "--output-dir", str(tmp_path), "--run-name", "mid"]) == 0
    events = EventAccumulator(str(tmp_path / "mid"))
    events.Reload()
    assert [event.step for event in events.Scalars("valid/accuracy")] == [2, 4, 5]
    best = [p.name for p in (tmp_path / "mid").glob("best_model_*.pt")]
    assert best and all(int(name.split("_")[2]) in (2, 4, 5) for name in best)  # numbered by iteration
