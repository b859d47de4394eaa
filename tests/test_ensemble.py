"""Blending: methods by hand, auto weights never below the best run, runs' rows aligned by id."""

import numpy as np
import pytest
from scipy.stats import rankdata

from src.ensemble import aligned, blend, combine, fit_weights, prepare
from src.inference.oof import predictions_frame, write_predictions
from src.targets import Head, Task
from tests.helpers import assert_refused, blend_runs, write_run

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


@pytest.mark.parametrize("kind", ["single", "multilabel"])
def test_a_prepared_blend_is_the_blend_of_the_stacked_runs_to_the_bit(kind):
    """`fit_weights` prepares the runs once and combines them per weights: the same numbers as blending the stacked
    runs from scratch (the formulas written out below) at every weight."""
    rng = np.random.default_rng(0)
    task = Task(kind, (Head("label", tuple("abcdefg")),))
    probs = [rng.dirichlet(np.ones(7), 50) for _ in range(3)]
    stack = np.stack(probs)
    for weights in (np.array([1.0, 2.0, 3.0]), np.array([0.2, 0.0, 0.8])):
        w = weights / weights.sum()
        geometric = np.exp(np.tensordot(w, np.log(np.clip(stack, 1e-15, 1.0)), axes=1))
        expected = {
            "mean": np.tensordot(w, stack, axes=1),
            "geometric": geometric if kind == "multilabel" else geometric / geometric.sum(1, keepdims=True),
            "rank": np.tensordot(w, np.stack([rankdata(p, axis=0) / len(p) for p in stack]), axes=1),
        }
        for method, value in expected.items():
            assert np.array_equal(blend(probs, weights, method, task), value)
            assert np.array_equal(combine(prepare(probs, method), weights, method, task), value)
    with pytest.raises(ValueError, match="--method 'median'"):
        blend(probs, np.ones(3), "median", task)


def test_aligned_puts_every_run_in_the_first_runs_row_order(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"r{i}" for i in range(30)]
    first, second = rng.dirichlet(np.ones(3), 30), rng.dirichlet(np.ones(3), 30)
    shuffled = rng.permutation(30)
    paths = [tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv", tmp_path / "d.csv"]
    write_predictions(predictions_frame(ids, first, TASK), paths[0])
    write_predictions(predictions_frame(ids, second, TASK), paths[1])  # the same order
    write_predictions(predictions_frame([ids[i] for i in shuffled], second[shuffled], TASK), paths[2])
    write_predictions(predictions_frame(ids[:29] + ["x"], second, TASK), paths[3])
    frame, order, probs = aligned(paths[:3], TASK, "OOF")
    assert order == ids and frame["id"].tolist() == ids
    assert np.array_equal(probs[0], first) and np.array_equal(probs[1], second) and np.array_equal(probs[2], second)
    with pytest.raises(ValueError, match="d.csv: its OOF ids differ"):
        aligned([paths[0], paths[3]], TASK, "OOF")


def test_runs_of_another_label_encoding_are_refused_by_name_even_with_allow_different_folds(tmp_path, capsys):
    """Two runs whose classes.json list the same classes in another order: one line naming both runs and the first
    class that differs; --allow-different-folds waives folds, not the label encoding."""
    from src.ensemble import main
    from src.tracking import share

    targets, good, noisy, _, _ = blend_runs(np.random.default_rng(1))
    ids, labels = [f"r{i}" for i in range(len(targets))], [TASK.classes[t] for t in targets]
    write_run(tmp_path / "A", ids, labels, good, good[:4])
    swapped = Task("single", (Head("label", ("a", "c", "b")),))
    write_run(tmp_path / "B", ids, labels, noisy[:, [0, 2, 1]], noisy[:4, [0, 2, 1]], task=swapped)
    argv = [str(tmp_path / "A"), str(tmp_path / "B"), "--allow-different-folds", "--output-dir", str(tmp_path / "e")]
    line = assert_refused(capsys, main, argv, tmp_path, "its class list differs")
    assert f"{tmp_path / 'B'}: its class list differs from {tmp_path / 'A'}'s" in line
    assert "class 1 of label: 'b' in A, 'c' in B" in line
    assert share.classes_fingerprint(tmp_path / "A") != share.classes_fingerprint(tmp_path / "B")
    assert share.classes_fingerprint(tmp_path / "A") == share.label_fingerprint(TASK)
