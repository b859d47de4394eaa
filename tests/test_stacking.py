"""Stacking on OOF (src/inference/stacking.py, ``src.ensemble --method stack``): the reported OOF score is honest."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from src.ensemble import main as ensemble_main
from src.inference import stacking
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
        task = Task("single", (Head("label", tuple("abcd")),))
        honest = stacking.honest_oof(features, targets, folds, task, name)
        assert honest.shape == (n, classes) and np.allclose(honest.sum(1), 1.0)
        out_of_fold = accuracy_score(targets, honest.argmax(1))
        assert in_sample > 1 / classes + 0.08, name  # fitted and scored on the same rows: it learned the noise
        assert abs(out_of_fold - 1 / classes) < 0.06, name  # the honest score stays at chance


def test_a_row_never_sees_its_own_label():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 90)
    features = np.eye(3)[targets] * 0.8 + 0.1  # a perfect run: the stacker learns to copy it
    folds = np.arange(90) % 3
    honest = stacking.honest_oof(features, targets, folds, ABC_TASK, "logistic")
    flipped = targets.copy()
    flipped[folds == 0] = (flipped[folds == 0] + 1) % 3  # other labels on fold 0 only
    other = stacking.honest_oof(features, flipped, folds, ABC_TASK, "logistic")
    np.testing.assert_allclose(other[folds == 0], honest[folds == 0])  # fold 0's own labels never reached it
    assert not np.allclose(other[folds != 0], honest[folds != 0])


def test_cli_stacks_complementary_runs(tmp_path, capsys):
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
    assert result["stack_features"] == "all"  # one label: one problem, which reads every column
    assert result["oof_blend"] > max(result["runs"].values())
    assert "logistic stacker on all columns (honest OOF)" in capsys.readouterr().out
    oof = pd.read_csv(out / "oof.csv")
    assert len(oof) == 120 and set(oof["fold"]) == {0, 1}
    assert pd.read_csv(out / "submission.csv")["id"].tolist() == [f"t{i}" for i in range(5)]


@pytest.mark.parametrize("features", ["auto", "own"])
def test_cli_stacks_multilabel_runs_one_tag_at_a_time(tmp_path, features):
    rng = np.random.default_rng(3)
    n = 160
    tags = Task("multilabel", (Head("label", ("a", "b", "c")),))
    has = rng.random((n, 3)) < 0.5
    has[:, 2] = True  # tag c on every row: its stacker is the constant "yes"
    knows_a = np.stack([np.where(has[:, 0], 0.9, 0.1), np.full(n, 0.5), np.full(n, 0.6)], 1)
    knows_b = np.stack([np.full(n, 0.5), np.where(has[:, 1], 0.9, 0.1), np.full(n, 0.6)], 1)
    ids = [f"r{i}" for i in range(n)]
    labels = [" ".join(t for t, h in zip("abc", row) if h) for row in has]
    write_run(tmp_path / "A", ids, labels, knows_a, knows_a[:5], task=tags)
    write_run(tmp_path / "B", ids, labels, knows_b, knows_b[:5], task=tags)
    out = tmp_path / "stack"
    runs = [str(tmp_path / "A"), str(tmp_path / "B")]
    assert ensemble_main([*runs, "--method", "stack", "--stack-features", features, "--output-dir", str(out)]) == 0
    result = json.loads((out / "ensemble.json").read_text())
    assert result["stack_features"] == {"auto": "all", "own": "own"}[features]  # 2 runs x 3 tags: few columns
    assert max(result["runs"].values()) < 0.65 and result["oof_blend"] > 0.95  # exact match of all three tags
    oof = pd.read_csv(out / "oof.csv")
    assert (oof["p_c"] > 0.99).all()


def test_several_heads_stack_one_head_at_a_time():
    rng = np.random.default_rng(4)
    n = 150
    task = Task("multihead", (Head("root", ("r0", "r1", "r2")), Head("vowel", ("v0", "v1"))))
    targets = np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n)], 1)
    features = np.concatenate([np.eye(3)[targets[:, 0]] * 0.6 + 0.1, np.eye(2)[targets[:, 1]] * 0.6 + 0.2], 1)
    honest = stacking.honest_oof(features, targets, np.arange(n) % 3, task, "logistic")
    assert honest.shape == (n, 5)
    assert np.allclose(honest[:, :3].sum(1), 1.0) and np.allclose(honest[:, 3:].sum(1), 1.0)  # per head
    assert (honest[:, :3].argmax(1) == targets[:, 0]).all() and (honest[:, 3:].argmax(1) == targets[:, 1]).all()
    test = stacking.fit_predict(features, targets, features[:7], task, "ridge")
    assert test.shape == (7, 5) and (test[:, :3].argmax(1) == targets[:7, 0]).all()


def test_an_unknown_stacker_is_named():
    with pytest.raises(ValueError, match="--stacker 'svm': unknown; known: logistic, ridge, gbm"):
        stacking.make_stacker("svm")


@pytest.mark.parametrize("name", stacking.STACKERS)
def test_each_fold_copied_once_stacks_as_one_fit_per_problem_and_fold(name):
    """honest_oof copies a fold's rows once for all tags: the numbers of fitting each tag's stacker on its own copy."""
    rng = np.random.default_rng(3)
    task = Task("multilabel", (Head("tags", tuple("abcd")),))
    targets = (rng.random((80, 4)) < [0.5, 0.3, 0.1, 0.0]).astype(np.float32)  # a tag never present: _Constant
    features = np.concatenate([np.clip(targets + rng.normal(0, 0.4, targets.shape), 0, 1) for _ in range(2)], 1)
    folds = np.arange(80) % 4
    expected = np.zeros((80, 4))
    for labels, classes, columns in stacking.problems(task, targets):
        for fold in range(4):
            held = folds == fold
            model = stacking._fit(name, features[~held], labels[~held])
            expected[held, columns] = stacking._columns(model, features[held], classes, columns)
    assert np.array_equal(stacking.honest_oof(features, targets, folds, task, name), expected)


def test_auto_features_are_all_columns_for_few_and_each_problems_own_for_many():
    tags = [Task("multilabel", (Head("tags", tuple(f"t{i}" for i in range(n))),)) for n in (17, 1000)]
    single = Task("single", (Head("label", tuple(f"c{i}" for i in range(1000))),))
    assert stacking.resolve_features("auto", 3, tags[0]) == "all"  # Planet: 51 columns
    assert stacking.resolve_features("auto", 3, tags[1]) == "own"  # iMet: 3,000 columns for each of 1,000 tags
    assert stacking.resolve_features("auto", 3, single) == "all"  # one problem
    assert stacking.resolve_features("all", 3, tags[1]) == "all"
    with pytest.raises(ValueError, match="--stack-features 'some': unknown; known: auto, all, own"):
        stacking.resolve_features("some", 3, tags[0])


@pytest.mark.parametrize("task", [
    Task("multilabel", (Head("tags", tuple("abcd")),)),
    Task("multihead", (Head("root", ("r0", "r1", "r2")), Head("vowel", ("v0", "v1")))),
], ids=["tags", "heads"])
def test_own_features_stack_each_problem_on_the_runs_columns_of_its_own_outputs(task):
    """``own``: the stacker of tag (or head) j reads run 0's and run 1's columns of j only: the numbers of fitting it
    by hand on those columns; a run's columns of the other tags do not reach it."""
    rng = np.random.default_rng(5)
    n, width = 120, task.num_outputs
    if task.kind == "multilabel":
        targets = (rng.random((n, width)) < [0.5, 0.3, 0.2, 0.6]).astype(np.float32)
    else:
        targets = np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n)], 1)
    features = rng.random((n, 2 * width))  # two runs side by side
    folds, test = np.arange(n) % 4, rng.random((9, 2 * width))
    expected_oof, expected_test = np.zeros((n, width)), np.zeros((9, width))
    for labels, classes, columns in stacking.problems(task, targets):
        own = [c for run in (0, 1) for c in range(run * width + columns.start, run * width + columns.stop)]
        chosen = features[:, own]
        for fold in range(4):
            held = folds == fold
            model = stacking._fit("logistic", chosen[~held], labels[~held])
            expected_oof[held, columns] = stacking._columns(model, chosen[held], classes, columns)
        model = stacking._fit("logistic", features[:, own], labels)
        expected_test[:, columns] = stacking._columns(model, test[:, own], classes, columns)
    honest = stacking.honest_oof(features, targets, folds, task, "logistic", "own")
    assert np.array_equal(honest, expected_oof)
    assert np.array_equal(stacking.fit_predict(features, targets, test, task, "logistic", "own"), expected_test)
    other = features.copy()
    other[:, 1::width] = rng.random((n, 2))  # every run's column 1 redrawn: only problems reading it change
    changed = stacking.honest_oof(other, targets, folds, task, "logistic", "own")
    unchanged = slice(0, 1) if task.kind == "multilabel" else slice(3, 5)  # tag a; the vowel head
    assert np.array_equal(changed[:, unchanged], honest[:, unchanged]) and not np.array_equal(changed, honest)
