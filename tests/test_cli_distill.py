"""Distillation end to end on the bundled digits, with a teacher's oof.csv made on the spot."""

import numpy as np
import pandas as pd
import pytest

from src.cli import parse_config
from src.inference.oof import predictions_frame
from src.loaddata import load_digits
from src.tracking.history import TIME_COLUMNS
from src.train import main
from src.training.assembly import setup_data
from tests import helpers
from tests.helpers import TINY


def _teacher(folder):
    data = load_digits()
    rng = np.random.default_rng(0)
    probs = 0.6 * np.eye(10)[data.targets] + 0.4 * rng.dirichlet(np.ones(10), size=len(data.targets))
    folder.mkdir()
    predictions_frame(data.source.ids(), probs, data.task).to_csv(folder / "oof.csv", index=False)
    return folder


def _history(run):
    return pd.read_csv(run / "history.csv").drop(columns=list(TIME_COLUMNS))


@pytest.mark.slow  # distillation's end-to-end run (~40 s on a slow 2-core machine)
def test_weight_0_trains_like_plain_training_and_weight_1_learns_the_teacher_with_mixup(tmp_path):
    teacher = _teacher(tmp_path / "teacher")
    flags = [*TINY, "--arch", "resnet18", "--epochs", "2", "--output-dir", str(tmp_path), "--no-pictures"]
    assert main([*flags, "--run-name", "plain"]) == 0
    assert main([*flags, "--run-name", "w0", "--teacher", str(teacher), "--teacher-weight", "0"]) == 0
    assert _history(tmp_path / "plain").equals(_history(tmp_path / "w0"))
    distilled = ["--teacher", str(teacher), "--teacher-weight", "1", "--teacher-temperature", "2"]
    assert main([*flags, "--run-name", "w1", *distilled, "--mixup-alpha", "0.4"]) == 0
    w1 = _history(tmp_path / "w1")
    assert len(w1) == 2 and np.isfinite(w1["train_loss"]).all()
    assert not w1["train_loss"].equals(_history(tmp_path / "plain")["train_loss"])


def _multihead(tmp):
    csv_path, pattern = helpers.parquet_multihead(tmp, n=24)
    flags = ["--train-csv", str(csv_path), "--parquet", pattern, "--id-col", "image_id", "--height", "12"]
    return [*flags, "--width", "16", "--label-col", "grapheme_root,vowel_diacritic,consonant_diacritic"]


def _multilabel(tmp):
    csv_path, folder = helpers.planet_multilabel(tmp, n=24)
    flags = ["--train-csv", str(csv_path), "--image-dir", str(folder), "--image-template", "{id}.jpg"]
    return [*flags, "--id-col", "image_name", "--label-col", "tags", "--multilabel"]


@pytest.mark.slow  # two more runs (20 s); soften/hard_targets per task kind are unit-tested by default
@pytest.mark.parametrize("layout", [_multihead, _multilabel])
def test_several_heads_and_tags_learn_from_a_teacher_with_mixup(tmp_path, layout):
    flags = layout(tmp_path)
    fast = ["--epochs", "1", "--batch-size", "8", "--train-eval-size", "8", "--folds", "2", "--img-size", "32"]
    data, _ = setup_data(parse_config([*flags, *fast]))
    probs = np.random.default_rng(0).random((len(data.targets), data.task.num_outputs))
    if data.task.kind == "multihead":  # each head's block sums to 1
        probs = np.concatenate(
            [b / b.sum(1, keepdims=True) for b in np.split(probs, np.cumsum(data.task.sizes)[:-1], 1)], 1
        )
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    predictions_frame(data.source.ids(), probs, data.task).to_csv(teacher / "oof.csv", index=False)
    run = [*flags, *fast, "--teacher", str(teacher), "--mixup-alpha", "0.4", "--output-dir", str(tmp_path / "out")]
    assert main([*run, "--run-name", "student", "--no-progress"]) == 0
    assert np.isfinite(pd.read_csv(tmp_path / "out" / "student" / "history.csv")["train_loss"]).all()
