"""The training objects: step counts computed once, and what a checkpoint saves derived from what exists."""

import pytest

from src.config import Config
from src.targets import Head, Task
from src.training.averaging import attach_ema
from src.training.trainer import Steps, Training, setup_training
from tests.helpers import CPU, backbone_classifier

TASK = Task("single", (Head("label", ("a", "b", "c", "d")),))


def _training(**fields) -> Training:
    config = Config.of(num_classes=4, **fields)
    return setup_training(config, backbone_classifier(), TASK, Steps.of(config, train_batches=10), CPU)


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({"max_iters_per_epoch": 6, "accumulation_steps": 2, "epochs": 3}, Steps(6, 3.0, 9, 3)),
        ({"accumulation_steps": 4, "epochs": 2, "warmup_epochs": 0.5}, Steps(10, 2.5, 5, 1)),
    ],
)
def test_steps_count_optimizer_steps_once(fields, expected):
    assert Steps.of(Config.of(**fields), train_batches=10) == expected


def test_a_plain_run_saves_the_trainer_model_optimizer_and_schedule_only():
    training = _training()
    always = {"trainer", "rng", "accumulated_gradients", "model", "optimizer"}  # rng: every process's generators
    assert set(training.to_save()) == always | {"lr_scheduler"}
    assert set(_training(scheduler="none").to_save()) == always
    assert list(training.models()) == ["train_eval", "valid"]


def test_every_object_that_exists_is_saved_under_its_checkpoint_key():
    training = _training(mixup_alpha=0.4, ema=0.9, swa_start_epoch=2, center_loss=0.01, epochs=2)
    saved = training.to_save()
    assert set(saved) == {
        "trainer",
        "rng",
        "accumulated_gradients",
        "model",
        "optimizer",
        "lr_scheduler",
        "mixup",
        "ema_model",
        "swa_model",
        "center_loss",
        "center_optimizer",
    }
    assert saved["ema_model"] is training.ema.ema_model and saved["center_loss"].centers.shape == (4, 8)
    attach_ema(training.trainer, training.ema, accumulation_steps=1)  # the momentum warmup exists once attached
    assert "ema_momentum_scheduler" in training.to_save()
    assert list(training.models()) == ["train_eval", "valid", "valid_ema", "valid_swa"]
    assert training.selection.name == "valid_ema" and training.selection.key == "valid_ema_accuracy"


def test_center_loss_needs_a_single_label_task():
    config = Config.of(num_classes=4, center_loss=0.01)
    tags = Task("multilabel", (Head("tags", ("a", "b", "c", "d")),))
    with pytest.raises(ValueError, match="--center-loss needs a single-label task"):
        setup_training(config, backbone_classifier(), tags, Steps.of(config, 10), CPU)
