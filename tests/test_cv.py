"""``--fold all`` (`src.cv`): what a fold leaves behind is freed before the next fold starts."""

import gc
import weakref

import src.cv
from src.config import Config


class Engine:
    """Stands in for an ignite engine: it and its handler refer to each other, as ignite's do."""

    def __init__(self):
        self.handler = {"engine": self, "model": bytearray(10**6)}


def test_a_fold_is_freed_before_the_next_one_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(src.cv, "gather_oof", lambda config, run_dir, folds: {"folds": folds})
    gc.disable()  # as between two collections in a long run: only the fold loop may collect the cycle
    try:
        previous, alive = [], []

        def train_fold(config: Config) -> None:
            alive.append([ref() is not None for ref in previous])
            previous.append(weakref.ref(Engine()))

        config = Config.of(folds=3, fold="all", output_dir=str(tmp_path), run_name="cv")
        src.cv.run_all_folds(config, train_fold)
    finally:
        gc.enable()
    assert alive == [[], [False], [False, False]]
