"""Blending: methods by hand, auto weights never below the best run."""

import numpy as np
import pytest

from src.ensemble import blend, fit_weights
from src.targets import Head, Task
from tests.helpers import blend_runs

TASK = Task("single", (Head("label", ("a", "b", "c")),))


def test_blend_methods_by_hand():
    p = [np.array([[0.6, 0.3, 0.1]]), np.array([[0.2, 0.2, 0.6]])]
    assert np.allclose(blend(p, np.array([3.0, 1.0]), "mean", TASK), [[0.5, 0.275, 0.225]])
    geometric = np.array([[0.6**0.5 * 0.2**0.5, 0.3**0.5 * 0.2**0.5, 0.1**0.5 * 0.6**0.5]])
    assert np.allclose(blend(p, np.array([1.0, 1.0]), "geometric", TASK), geometric / geometric.sum())
    rows = [np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]), np.array([[0.3, 0.7], [0.1, 0.9], [0.2, 0.8]])]
    two = Task("single", (Head("label", ("a", "b")),))
    ranks = blend(rows, np.array([1.0, 1.0]), "rank", two)  # column ranks / 3, averaged
    assert np.allclose(ranks, [[(3 + 3) / 6, (1 + 1) / 6], [(1 + 1) / 6, (3 + 3) / 6], [(2 + 2) / 6, (2 + 2) / 6]])


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_auto_weights_never_score_below_the_best_run(metric):
    from src.metrics import get_metric, score

    targets, good, noisy, left, right = blend_runs(np.random.default_rng(0))
    sign = 1 if get_metric(metric).higher_is_better else -1
    for probs in ([good, noisy], [noisy, good], [left, right]):
        weights = fit_weights(probs, targets, TASK, metric, "mean")
        assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
        blended = sign * score(metric, blend(probs, weights, "mean", TASK), targets, TASK)
        assert blended >= max(sign * score(metric, p, targets, TASK) for p in probs) - 1e-9
    weights = fit_weights([left, right], targets, TASK, "log_loss", "mean")
    assert weights == pytest.approx([0.5, 0.5], abs=0.05)  # complementary runs: both count equally
