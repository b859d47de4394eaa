"""Stacking on OOF (src/stacking.py, ``src.ensemble --method stack``): the reported OOF score is honest."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from src import stacking
from src.ensemble import main as ensemble_main
from src.targets import Head, Task
from tests.helpers import ABC_TASK, write_run


def test_on_pure_noise_the_in_sample_stacker_looks_good_and_the_honest_stack_stays_at_chance():
    rng = np.random.default_rng(0)
    n, classes, runs = 300, 4, 5
    targets = rng.integers(0, classes, n)
    features = np.concatenate([rng.dirichlet(np.ones(classes), n) for _ in range(runs)], 1)  # no signal at all
    folds = np.arange(n) % 5
    for name in stacking.STACKERS:
        leaky = stacking.make_stacker(name).fit(features, targets)
        in_sample = accuracy_score(targets, leaky.predict_proba(features).argmax(1))
        honest = stacking.honest_oof(features, targets, folds, classes, name)
        assert honest.shape == (n, classes) and np.allclose(honest.sum(1), 1.0)
        out_of_fold = accuracy_score(targets, honest.argmax(1))
        assert in_sample > 1 / classes + 0.08, name  # fitted and scored on the same rows: it learned the noise
        assert abs(out_of_fold - 1 / classes) < 0.06, name  # the honest score stays at chance


def test_a_row_never_sees_its_own_label():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 90)
    features = np.eye(3)[targets] * 0.8 + 0.1  # a perfect run: the stacker learns to copy it
    folds = np.arange(90) % 3
    honest = stacking.honest_oof(features, targets, folds, 3, "logistic")
    flipped = targets.copy()
    flipped[folds == 0] = (flipped[folds == 0] + 1) % 3  # other labels on fold 0 only
    other = stacking.honest_oof(features, flipped, folds, 3, "logistic")
    np.testing.assert_allclose(other[folds == 0], honest[folds == 0])  # fold 0's own labels never reached it
    assert not np.allclose(other[folds != 0], honest[folds != 0])


def test_cli_stacks_complementary_runs_and_refuses_what_it_cannot(tmp_path, capsys):
    from tests.helpers import blend_runs

    targets, _, _, left, right = blend_runs(np.random.default_rng(2), n=120)
    ids, labels = [f"r{i}" for i in range(len(targets))], [ABC_TASK.classes[t] for t in targets]
    write_run(tmp_path / "A", ids, labels, left, left[:5])
    write_run(tmp_path / "B", ids, labels, right, right[:5])
    out = tmp_path / "stack"
    runs = [str(tmp_path / "A"), str(tmp_path / "B")]
    assert ensemble_main([*runs, "--method", "stack", "--output-dir", str(out)]) == 0
    result = json.loads((out / "ensemble.json").read_text())
    assert result["method"] == "stack" and result["stacker"] == "logistic" and result["weights"] is None
    assert result["oof_blend"] > max(result["runs"].values())
    assert "logistic stacker (honest OOF)" in capsys.readouterr().out
    oof = pd.read_csv(out / "oof.csv")
    assert len(oof) == 120 and set(oof["fold"]) == {0, 1}
    assert pd.read_csv(out / "submission.csv")["id"].tolist() == [f"t{i}" for i in range(5)]

    tags = Task("multilabel", (Head("label", ("a", "b", "c")),))
    write_run(tmp_path / "C", ids, ["a b"] * 120, left, left[:5], task=tags)
    write_run(tmp_path / "D", ids, ["a b"] * 120, right, right[:5], task=tags)
    assert ensemble_main([str(tmp_path / "C"), str(tmp_path / "D"), "--method", "stack"]) == 2
    assert "--method stack: one label per row only" in capsys.readouterr().err


def test_an_unknown_stacker_is_named():
    with pytest.raises(ValueError, match="--stacker 'svm': unknown; known: logistic, ridge, gbm"):
        stacking.make_stacker("svm")
