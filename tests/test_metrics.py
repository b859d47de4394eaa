"""Competition metrics (--metric), each against a hand computation; the ignite form."""

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from src.metrics import get_metric, ignite_metric, score, to_probs
from src.targets import Head, Task


def _single(num_classes: int) -> Task:
    return Task("single", (Head("label", tuple(f"c{i}" for i in range(num_classes))),))


SINGLE3 = _single(3)


PROBS3 = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6], [0.5, 0.3, 0.2]])


def test_accuracy_top_k_and_map_at_k_by_hand():
    targets = np.array([0, 0, 0, 2])
    # ranks of the true class: 1, 2, 3, 3
    assert score("accuracy", PROBS3, targets, SINGLE3) == pytest.approx(1 / 4)
    assert score("top2", PROBS3, targets, SINGLE3) == pytest.approx(2 / 4)
    assert score("map@3", PROBS3, targets, SINGLE3) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 3) / 4)
    assert score("map@2", PROBS3, targets, SINGLE3) == pytest.approx((1 + 1 / 2) / 4)


def test_macro_recall_and_the_bengali_weighted_heads_by_hand():
    probs = np.eye(3)[[0, 1, 1, 1, 0]]  # predictions 0 1 1 1 0
    targets = np.array([0, 0, 1, 1, 2])  # recalls: class 0 1/2, class 1 2/2, class 2 0/1
    assert score("macro_recall", probs, targets, SINGLE3) == pytest.approx((0.5 + 1 + 0) / 3)
    task = Task("multihead", (Head("root", ("a", "b")), Head("vowel", ("x", "y"))), weights=(2.0, 1.0))
    probs = np.concatenate([np.eye(2)[[0, 1, 1, 0]], np.eye(2)[[0, 0, 0, 0]]], axis=1)  # (4, 2 + 2)
    targets = np.array([[0, 0], [1, 1], [1, 0], [0, 1]])  # root: recall 1, 1; vowel: 1, 0
    assert score("macro_recall", probs, targets, task) == pytest.approx((2 * 1.0 + 1 * 0.5) / 3)


def test_f2_multilabel_at_a_threshold_by_hand():
    task = Task("multilabel", (Head("tags", ("a", "b", "c")),))
    targets = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.1, 0.3], [0.1, 0.8, 0.25]])
    # threshold 0.2: predictions [1 0 1], [0 1 1] -> F2 1 and P=1/2, R=1 -> 5PR/(4P+R) = 2.5/3
    assert score("f2", probs, targets, task, threshold=0.2) == pytest.approx((1 + 2.5 / 3) / 2)
    # threshold 0.5: [1 0 0] (P=1, R=1/2 -> 2.5/4.5) and [0 1 0] (1)
    assert score("f2", probs, targets, task) == pytest.approx((2.5 / 4.5 + 1) / 2)


def test_roc_auc_qwk_and_log_loss_by_hand():
    binary = _single(2)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    targets = np.array([0, 0, 1, 1])
    assert score("roc_auc", probs, targets, binary) == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered
    assert score("log_loss", probs, targets, binary) == pytest.approx(
        -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    )
    predicted = np.eye(3)[[0, 2, 2]]
    # observed (0,0) (1,2) (2,2); weights (i-j)^2: observed cost 1, expected cost 5 -> kappa 1 - 1/5
    assert score("qwk", predicted, np.array([0, 1, 2]), SINGLE3) == pytest.approx(0.8)


def test_unknown_or_unfit_metric_is_named():
    with pytest.raises(ValueError, match="map@<k>"):
        get_metric("mAP")
    with pytest.raises(ValueError, match="not defined for a single task"):
        get_metric("f2", SINGLE3)
    assert not get_metric("log_loss").higher_is_better


def test_ignite_metric_over_batches_equals_the_score_of_the_whole_set():
    logits = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    batches = [(logits[:4], targets[:4]), (logits[4:], targets[4:])]
    evaluator = Engine(lambda engine, batch: batch)
    ignite_metric("map@3", SINGLE3).attach(evaluator, "map@3")
    evaluator.run(batches)
    expected = score("map@3", to_probs(logits, SINGLE3), targets.numpy(), SINGLE3)
    assert evaluator.state.metrics["map@3"] == pytest.approx(expected)


def test_thresholds_tuned_per_tag_beat_one_threshold():
    from src.metrics import tune_thresholds

    task = Task("multilabel", (Head("tags", ("rare", "common")),))
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 2)) < [0.2, 0.7]).astype(np.float32)
    probs = np.where(targets > 0, [0.3, 0.8], [0.1, 0.6]) + rng.normal(0, 0.05, (200, 2))  # tag scales differ
    thresholds = tune_thresholds(probs, targets, task, "f2")
    assert 0.1 < thresholds[0] < 0.3 and 0.6 < thresholds[1] < 0.8  # between each tag's two modes
    assert score("f2", probs, targets, task, thresholds) > score("f2", probs, targets, task, 0.5)
