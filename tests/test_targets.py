import math

import numpy as np
import pandas as pd
import pytest
import torch

from src.engine import create_evaluator, make_metrics
from src.losses import MultiHeadLoss, SmoothBCEWithLogits, task_criterion
from src.mixup import Mixup
from src.model import build_model
from src.targets import Head, Task, infer_task

HEADS = Task("multihead", (Head("root", ("a", "b", "c")), Head("vowel", ("x", "y"))), (2.0, 1.0))


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


def test_multihead_cross_entropy_is_the_weighted_mean_of_the_heads():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 1.0]])
    loss = MultiHeadLoss([3, 2], [2.0, 1.0])(logits, torch.tensor([[0, 1]]))
    root = -math.log(math.exp(2) / (math.exp(2) + 2))  # head 1: class 0 of logits (2, 0, 0)
    vowel = -math.log(math.e / (1 + math.e))  # head 2: class 1 of logits (0, 1)
    assert loss.item() == pytest.approx((2 * root + vowel) / 3, rel=1e-6)
    soft = HEADS.to_soft(torch.tensor([[0, 1]]))
    assert task_criterion(HEADS)(logits, soft).item() == pytest.approx(loss.item(), rel=1e-6)


def test_bce_label_smoothing_moves_targets_towards_one_half():
    logits, target = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    loss = SmoothBCEWithLogits(label_smoothing=0.2)(logits, target)
    sig = 1 / (1 + math.exp(-2))
    by_hand = (math.log(2) + -(0.1 * math.log(sig) + 0.9 * math.log(1 - sig))) / 2  # targets 0.9 and 0.1
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def _evaluate(task, y_pred, y):
    evaluator = create_evaluator(torch.nn.Identity(), make_metrics(task), torch.device("cpu"))
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


def test_model_with_heads_outputs_the_heads_side_by_side():
    model = build_model("effnet-b0", num_classes=[168, 11, 7], in_chans=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 186)
    assert [h.out_features for h in model.fc.heads] == [168, 11, 7]


def test_encode_reports_bad_rows_instead_of_raising_when_asked():
    task = Task("single", (Head("label", ("a", "b")),))
    bad = []
    codes = task.encode(pd.DataFrame({"label": ["a", "z", None, "b"]}), "t.csv", bad=bad)
    assert [row for row, _ in bad] == [1, 2] and codes[[0, 3]].tolist() == [0, 1]
    assert "t.csv line 3: label 'z'" in bad[0][1] and np.all(codes[[1, 2]] == 0)
