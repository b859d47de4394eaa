"""Tasks: class lists, tags and heads, target encoding, soft targets, bad rows reported."""

import numpy as np
import pandas as pd
import pytest
import torch

from src.mixup import Mixup
from src.targets import Head, Task, infer_task
from tests.helpers import HEADS


def test_infer_task_orders_integer_classes_numerically_and_reads_tags():
    table = pd.DataFrame({"label": ["10", "9", "2", "9"], "tags": ["haze", "clear primary", "haze water", "clear"]})
    assert infer_task(table, ["label"]).classes == ["2", "9", "10"]
    tags = infer_task(table, ["tags"], multilabel=True)
    assert tags.kind == "multilabel" and tags.classes == ["clear", "haze", "primary", "water"]
    assert tags.encode(table).tolist()[1] == [1, 0, 1, 0]


def test_head_weights_must_match_the_label_columns():
    table = pd.DataFrame({"a": ["1", "2"], "b": ["1", "2"]})
    with pytest.raises(ValueError, match="expected 2 weights"):
        infer_task(table, ["a", "b"], head_weights=[2, 1, 1])


def test_task_round_trips_through_its_dict():
    assert Task.from_dict(HEADS.to_dict()) == HEADS


def test_multihead_soft_targets_are_one_hot_per_head():
    soft = HEADS.to_soft(torch.tensor([[2, 0], [0, 1]]))
    assert soft.tolist() == [[0, 0, 1, 1, 0], [1, 0, 0, 0, 1]]
    mixed_x, mixed_y = Mixup(0.4, HEADS.num_outputs, seed=0, to_soft=HEADS.to_soft)(
        torch.randn(2, 1, 4, 4), torch.tensor([[2, 0], [0, 1]])
    )
    assert torch.allclose(mixed_y[:, :3].sum(1), torch.ones(2)) and torch.allclose(mixed_y[:, 3:].sum(1), torch.ones(2))


def test_encode_reports_bad_rows_instead_of_raising_when_asked():
    task = Task("single", (Head("label", ("a", "b")),))
    bad = []
    codes = task.encode(pd.DataFrame({"label": ["a", "z", None, "b"]}), "t.csv", bad=bad)
    assert [row for row, _ in bad] == [1, 2] and codes[[0, 3]].tolist() == [0, 1]
    assert "t.csv line 3: label 'z'" in bad[0][1] and np.all(codes[[1, 2]] == 0)
