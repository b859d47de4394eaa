"""Folds: stratified, seeded and complete; a debug fraction keeps them; fold columns, groups, multi-label tags."""

import numpy as np
import pandas as pd
import pytest

from src.folds import assign_folds, make_folds
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
