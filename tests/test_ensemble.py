"""python -m src.ensemble: blend methods by hand, auto weights never below the best run, files and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from src.config import Config
from src.ensemble import blend, fit_weights
from src.ensemble import main as ensemble_main
from src.oof import predictions_frame
from src.targets import Head, Task

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


def _runs(rng, n=60):
    targets = rng.integers(0, 3, n)
    onehot = np.eye(3)[targets]
    good = 0.6 * onehot + 0.4 * rng.dirichlet(np.ones(3), n)  # mostly right
    noisy = rng.dirichlet(np.ones(3), n)  # chance
    left = np.where(np.arange(n)[:, None] < n // 2, 0.7 * onehot + 0.1, 1 / 3)  # right on the first half only
    right = np.where(np.arange(n)[:, None] >= n // 2, 0.7 * onehot + 0.1, 1 / 3)
    return targets, good, noisy, left, right


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_auto_weights_never_score_below_the_best_run(metric):
    from src.metrics import get_metric, score

    targets, good, noisy, left, right = _runs(np.random.default_rng(0))
    sign = 1 if get_metric(metric).higher_is_better else -1
    for probs in ([good, noisy], [noisy, good], [left, right]):
        weights = fit_weights(probs, targets, TASK, metric, "mean")
        assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
        blended = sign * score(metric, blend(probs, weights, "mean", TASK), targets, TASK)
        assert blended >= max(sign * score(metric, p, targets, TASK) for p in probs) - 1e-9
    weights = fit_weights([left, right], targets, TASK, "log_loss", "mean")
    assert weights == pytest.approx([0.5, 0.5], abs=0.05)  # complementary runs: both count equally


def _write_run(folder, ids, labels, probs, test_probs, task=TASK):
    folder.mkdir(parents=True)
    (folder / "fold0").mkdir()
    (folder / "fold0" / "classes.json").write_text(json.dumps(task.to_dict()))
    (folder / "fold0" / "config.yaml").write_text(yaml.safe_dump(Config().to_dict()))
    labels_frame = pd.DataFrame({"label": labels})
    predictions_frame(ids, probs, task, folds=np.arange(len(ids)) % 2, labels=labels_frame).to_csv(
        folder / "oof.csv", index=False
    )
    predictions_frame([f"t{i}" for i in range(len(test_probs))], test_probs, task).to_csv(
        folder / "test_predictions.csv", index=False
    )


def test_cli_blends_oof_and_test_and_names_bad_input(tmp_path, capsys):
    targets, good, _, left, right = _runs(np.random.default_rng(1))
    ids, labels = [f"r{i}" for i in range(len(targets))], [TASK.classes[t] for t in targets]
    _write_run(tmp_path / "A", ids, labels, left, left[:5])
    _write_run(tmp_path / "B", ids[::-1], labels[::-1], right[::-1], right[:5])  # another row order
    out = tmp_path / "blend"
    assert ensemble_main([str(tmp_path / "A"), str(tmp_path / "B"), "--output-dir", str(out)]) == 0
    result = json.loads((out / "ensemble.json").read_text())
    assert result["oof_blend"] > max(result["runs"].values())  # complementary halves: the blend wins
    submission = pd.read_csv(out / "submission.csv")
    assert submission["id"].tolist() == [f"t{i}" for i in range(5)] and set(submission["label"]) <= {"a", "b", "c"}
    assert "blend" in capsys.readouterr().out

    other = Task("single", (Head("label", ("a", "b", "x")),))
    _write_run(tmp_path / "C", ids, labels[:], good, good[:5], task=other)
    assert ensemble_main([str(tmp_path / "A"), str(tmp_path / "C"), "--output-dir", str(out)]) == 2
    assert "class list differs" in capsys.readouterr().err
