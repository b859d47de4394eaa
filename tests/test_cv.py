"""``--fold all`` (`src.training.cv`): what a fold leaves behind is freed before the next fold starts; the folds' valid
predictions gathered into oof.csv."""

import gc
import json
import weakref

import numpy as np
import pandas as pd
import pytest

import src.training.cv
from src.config import Config
from src.inference.oof import predictions_frame, write_predictions
from src.targets import Head, Task


class Engine:
    """Stands in for an ignite engine: it and its handler refer to each other, as ignite's do."""

    def __init__(self):
        self.handler = {"engine": self, "model": bytearray(10**6)}


def test_a_fold_is_freed_before_the_next_one_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(src.training.cv, "gather_oof", lambda config, run_dir, folds: {"folds": folds})
    gc.disable()  # as between two collections in a long run: only the fold loop may collect the cycle
    try:
        previous, alive = [], []

        def train_fold(config: Config, started=None) -> None:
            alive.append([ref() is not None for ref in previous])
            previous.append(weakref.ref(Engine()))

        config = Config.of(folds=3, fold="all", output_dir=str(tmp_path), run_name="cv")
        src.training.cv.run_all_folds(config, train_fold)
    finally:
        gc.enable()
    assert alive == [[], [False], [False, False]]


@pytest.mark.parametrize("note", [False, True], ids=["as-written", "a-column-after-the-probabilities"])
def test_oof_is_the_folds_valid_predictions_one_under_the_other(tmp_path, note):
    """oof.csv holds the folds' files as read, in fold order, byte for byte what pandas writes of them; a fold file
    with other columns after its probabilities is kept as it is."""
    rng = np.random.default_rng(0)
    task = Task("multilabel", (Head("tags", ("a", "b", "c")),))
    for fold in range(3):
        folder = tmp_path / f"fold{fold}"
        folder.mkdir()
        (folder / "classes.json").write_text(json.dumps(task.to_dict()))
        ids = [f"{fold}-{i}" for i in range(20)]
        labels = pd.DataFrame({"tags": rng.choice(["a", "b c", "a b c"], 20)})
        frame = predictions_frame(ids, rng.random((20, 3)) ** 4, task, np.full(20, fold), labels)
        if note and fold == 2:
            frame["note"] = "x"  # not as src.training.trainer writes it
        write_predictions(frame, folder / "valid_predictions.csv")
    summary = src.training.cv.gather_oof(Config.of(folds=3, metric="f2"), tmp_path)
    text = {"id": str, "tags": str}
    read = [pd.read_csv(tmp_path / f"fold{k}" / "valid_predictions.csv", dtype=text) for k in range(3)]
    pd.concat(read, ignore_index=True).to_csv(tmp_path / "expected.csv", index=False)
    assert (tmp_path / "oof.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()
    assert summary["oof_rows"] == 60 and len(summary["fold_scores"]) == 3
