"""Evaluation: which validation selects, in which direction, and when the evaluators run."""

from ignite.engine import Engine, Events

from src.config import Config
from src.training.evaluation import Selection, validation_event


def test_the_ema_model_selects_with_ema_and_a_loss_selects_downwards():
    assert Selection.of(Config()) == Selection("valid", "accuracy", True)
    selection = Selection.of(Config.of(ema=0.99, metric="log_loss"))
    assert selection.key == "valid_ema_log_loss" and not selection.higher_is_better
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.metrics = {"log_loss": 0.25}
    assert selection.score_function()(evaluator) == -0.25  # higher is better for Checkpoint and EarlyStopping


def test_validation_runs_each_epoch_or_inside_epochs_on_optimizer_steps():
    assert validation_event(Config(), epoch_length=10) == Events.EPOCH_COMPLETED
    trainer, fired = Engine(lambda engine, batch: None), []
    event = validation_event(Config.of(val_every=0.5, accumulation_steps=2), epoch_length=8)
    trainer.add_event_handler(event, lambda engine: fired.append(engine.state.iteration))
    trainer.run(range(8), max_epochs=1)
    assert fired == [4, 8]
