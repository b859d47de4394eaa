"""Folds: stratified, seeded and complete; a debug fraction keeps them; fold columns, groups, multi-label tags."""

import numpy as np
import pandas as pd
import pytest
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from src.data.folds import MultilabelFolds, assign_folds, folds_from_run, make_folds
from src.targets import Head, Task
from tests import helpers
from tests.helpers import fake_data, load, split


def test_folds_are_stratified_deterministic_and_cover_every_row():
    labels = np.repeat(np.arange(5), [40, 23, 17, 60, 11])
    folds = make_folds(None, labels, 5, seed=3)
    assert np.array_equal(folds, make_folds(None, labels, 5, seed=3))
    assert not np.array_equal(folds, make_folds(None, labels, 5, seed=4))
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    for c in range(5):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_too_small_class_is_named():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        make_folds(None, np.array([0] * 10 + [1] * 10 + [2] * 3), 5, seed=0)


def test_fraction_keeps_fold_assignment():
    data = fake_data(200)
    full_train, full_valid = split(data, 5, 1)
    train, valid = split(data, 5, 1, fraction=0.1, min_train=32)
    assert len(train) == 32 and set(train) <= set(full_train) and set(valid) <= set(full_valid)
    assert not set(full_train) & set(full_valid)


def test_folds_honour_a_fold_column_and_groups(tmp_path):
    csv, root = helpers.six_channel(tmp_path, n=12)
    fields = dict(train_csv=str(csv), image_dir=str(root), folds=4, **helpers.SIX_CHANNEL)
    data = load(**fields)
    fold_of = assign_folds(data, 4, seed=0, group_col="plate")
    plates = data.source.table["plate"].to_numpy()
    for plate in np.unique(plates):
        assert len(set(fold_of[plates == plate])) == 1  # no plate on both sides
    table = pd.read_csv(csv)
    table["fold"] = np.arange(12) % 4
    table.to_csv(csv, index=False)
    data = load(**fields)
    assert assign_folds(data, 4, seed=0).tolist() == (np.arange(12) % 4).tolist()


def test_multilabel_folds_keep_tag_frequencies(tmp_path):
    csv, folder = helpers.planet_multilabel(tmp_path, n=24)
    data = load(
        train_csv=str(csv),
        image_dir=str(folder),
        image_template="{id}.jpg",
        id_col="image_name",
        label_col="tags",
        multilabel=True,
    )
    assert data.task.kind == "multilabel" and data.classes == ["clear", "haze", "primary", "water"]
    assert data.targets.dtype == np.float32 and data.targets.sum(0).tolist() == [12, 12, 12, 6]
    fold_of = assign_folds(data, 3, seed=0)
    assert np.array_equal(fold_of, assign_folds(data, 3, seed=0))
    whole = data.targets.mean(0)
    for fold in range(3):
        assert np.abs(data.targets[fold_of == fold].mean(0) - whole).max() <= 0.15


def _test_folds(splitter, targets: np.ndarray) -> np.ndarray:
    fold_of = np.full(len(targets), -1)
    for fold, (_, valid) in enumerate(splitter.split(np.zeros(len(targets)), targets)):
        fold_of[valid] = fold
    return fold_of


@pytest.mark.parametrize("case", range(12))
def test_multilabel_folds_are_the_packages(case):
    """`MultilabelFolds` gives iterative-stratification's own folds: same algorithm, same random draws (rare and
    common tags, rows without tags, 2-5 folds)."""
    rng = np.random.default_rng(case)
    rows, tags, folds = int(rng.integers(20, 300)), int(rng.integers(2, 25)), int(rng.integers(2, 6))
    targets = (rng.random((rows, tags)) < rng.random(tags) ** 3 * 0.6).astype(np.float32)
    targets[rng.random(rows) < 0.2] = 0  # rows without tags are spread last
    for seed in (0, case + 1):
        ours = _test_folds(MultilabelFolds(n_splits=folds, shuffle=True, random_state=seed), targets)
        theirs = _test_folds(MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed), targets)
        assert np.array_equal(ours, theirs)


def test_multilabel_folds_of_a_thousand_tags_are_balanced_and_the_packages():
    """iMet-like: 1-5 of 1,000 long-tailed tags per row; make_folds gives the package's folds, whose tags are spread
    over the folds far more evenly than a random assignment's."""
    rng = np.random.default_rng(0)
    rows, tags = 3000, 1000
    weights = 1.0 / np.arange(1, tags + 1) ** 0.8
    targets = np.zeros((rows, tags), np.float32)
    for row, count in enumerate(rng.integers(1, 6, rows)):
        targets[row, rng.choice(tags, count, replace=False, p=weights / weights.sum())] = 1.0
    task = Task("multilabel", (Head("tags", tuple(f"t{i}" for i in range(tags))),))
    fold_of = make_folds(task, targets, 5, seed=3)
    theirs = _test_folds(MultilabelStratifiedKFold(n_splits=5, shuffle=True, random_state=3), targets)
    assert np.array_equal(fold_of, theirs)

    def spread(fold_of: np.ndarray) -> np.ndarray:  # (tags,) most minus fewest rows of each tag in a fold
        per_fold = np.stack([targets[fold_of == k].sum(0) for k in range(5)])  # (folds, tags)
        return per_fold.max(0) - per_fold.min(0)

    assert np.mean(spread(fold_of) <= 1) >= 0.8
    assert spread(fold_of).mean() < 0.6 * spread(rng.integers(0, 5, rows)).mean()
    assert np.bincount(fold_of).max() - np.bincount(fold_of).min() <= 0.02 * rows


def test_multilabel_folds_refuse_a_single_tag_column_as_the_package_does():
    with pytest.raises(ValueError, match="multilabel-indicator"):
        _test_folds(MultilabelFolds(n_splits=2, shuffle=True, random_state=0), np.ones((10, 1)))


def test_folds_from_a_run_are_that_runs_folds_in_this_datas_row_order(tmp_path):
    """``--folds-from RUN``: a teammate's folds.csv (another row order, extra rows) gives each row its fold there;
    rows it lacks and another number of folds are named."""
    data = fake_data(n=12)
    ids = data.source.ids()
    theirs = pd.DataFrame({"id": [*ids[::-1], "extra"], "fold": [*(np.arange(12) // 4)[::-1], 0]})
    (tmp_path / "run").mkdir()
    theirs.to_csv(tmp_path / "run" / "folds.csv", index=False)
    assert folds_from_run(data, tmp_path / "run", 3).tolist() == (np.arange(12) // 4).tolist()
    with pytest.raises(ValueError, match="its folds.csv has 3 folds; pass --folds 3"):
        folds_from_run(data, tmp_path / "run", 5)
    theirs.iloc[2:].to_csv(tmp_path / "run" / "folds.csv", index=False)  # lacks ids 11 and 10
    with pytest.raises(ValueError, match=r"2 of 12 rows are not in its folds.csv \(10, 11\)"):
        folds_from_run(data, tmp_path / "run", 3)
    with pytest.raises(FileNotFoundError, match="--folds-from .*nowhere: no folds.csv"):
        folds_from_run(data, tmp_path / "nowhere", 3)
