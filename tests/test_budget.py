import json

import pytest

from src.tracking import rundir
from src.training.budget import Budget, plan


@pytest.mark.parametrize(
    "left_s, folds, epochs, epoch_s, expected",
    [
        (1000, 4, 10, 20, (4, 10)),  # 800 s fits
        (600, 4, 10, 20, (4, 7)),  # 7 epochs each: 560 s
        (300, 4, 10, 20, (3, 5)),  # half the epochs (5) for 3 folds: 300 s
        (90, 4, 10, 20, (0, 5)),  # not even one fold of 5 epochs
        (100, 1, 1, 150, (0, 1)),
        (-5, 2, 10, 20, (0, 5)),  # past the budget already
    ],
)
def test_the_plan_for_a_given_pace(left_s, folds, epochs, epoch_s, expected):
    chosen = plan(left_s, folds, epochs, epoch_s)
    assert (chosen.folds, chosen.epochs) == expected
    if chosen.folds:
        assert chosen.folds * chosen.epochs * epoch_s <= left_s


def _finished(run_dir, fold, epochs, wall):
    folder = rundir.fold_dir(run_dir, fold)
    folder.mkdir(parents=True)
    (folder / rundir.SUMMARY).write_text(json.dumps({"epochs_run": epochs, "wall_time_s": wall}))


def test_fold_0_measures_and_the_later_folds_follow_the_time_left(tmp_path, caplog):
    now = [0.0]
    budget = Budget(1000, folds=5, epochs=10, clock=lambda: now[0])
    assert budget.epochs_for(0, tmp_path) == 10  # nothing measured yet
    _finished(tmp_path, 0, 10, 200.0)  # 20 s per epoch
    now[0] = 200.0
    with caplog.at_level("INFO", logger="src.training.budget"):
        assert budget.epochs_for(1, tmp_path) == 10  # 4 x 10 x 20 = 800 s of 800 left
    assert "time budget: 13m 20s left at 20.0 s per epoch: 4 of the 4 remaining folds at 10 epochs" in caplog.text
    _finished(tmp_path, 1, 10, 400.0)  # slower: 30 s per epoch over both folds
    now[0] = 600.0
    assert budget.epochs_for(2, tmp_path) == 5  # 400 s left: 2 folds of 5 epochs at 30 s (300 s); 3 would not fit
    _finished(tmp_path, 2, 5, 150.0)
    now[0] = 750.0
    assert budget.epochs_for(3, tmp_path) == 5  # 250 s left at 30 s per epoch: one fold of 5 (150 s)
    _finished(tmp_path, 3, 5, 150.0)
    now[0] = 900.0
    assert budget.epochs_for(4, tmp_path) is None  # 100 s left: fold 4 is left out
    assert budget.epochs_for(4, tmp_path) is None
