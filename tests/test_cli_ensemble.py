"""python -m src.ensemble: OOF and test predictions of two runs blended into files; bad input named."""

import json

import numpy as np
import pandas as pd

from src.ensemble import main as ensemble_main
from src.targets import Head, Task
from tests.helpers import ABC_TASK, blend_runs, write_run


def test_cli_blends_oof_and_test_and_names_bad_input(tmp_path, capsys):
    targets, good, _, left, right = blend_runs(np.random.default_rng(1))
    ids, labels = [f"r{i}" for i in range(len(targets))], [ABC_TASK.classes[t] for t in targets]
    write_run(tmp_path / "A", ids, labels, left, left[:5])
    write_run(tmp_path / "B", ids[::-1], labels[::-1], right[::-1], right[:5])  # another row order
    out = tmp_path / "blend"
    assert ensemble_main([str(tmp_path / "A"), str(tmp_path / "B"), "--output-dir", str(out)]) == 0
    result = json.loads((out / "ensemble.json").read_text())
    assert result["oof_blend"] > max(result["runs"].values())  # complementary halves: the blend wins
    submission = pd.read_csv(out / "submission.csv")
    assert submission["id"].tolist() == [f"t{i}" for i in range(5)] and set(submission["label"]) <= {"a", "b", "c"}
    assert "blend" in capsys.readouterr().out

    other = Task("single", (Head("label", ("a", "b", "x")),))
    write_run(tmp_path / "C", ids, labels[:], good, good[:5], task=other)
    assert ensemble_main([str(tmp_path / "A"), str(tmp_path / "C"), "--output-dir", str(out)]) == 2
    assert "class list differs" in capsys.readouterr().err


def test_runs_on_other_folds_are_refused_by_name_unless_allowed(tmp_path, capsys):
    """A blend of runs whose OOF rows sit in other folds leaks (each run's models saw rows the other validates
    on): refused with the run, the count and the first ids; --allow-different-folds blends and says so."""
    targets, good, _, left, right = blend_runs(np.random.default_rng(2))
    ids, labels = [f"r{i}" for i in range(len(targets))], [ABC_TASK.classes[t] for t in targets]
    write_run(tmp_path / "A", ids, labels, left, left[:5], folds=[0, 1] * (len(ids) // 2))
    other_folds = [0, 1] * (len(ids) // 2)
    other_folds[2], other_folds[3] = 1, 0  # r2 and r3 swap folds; the other rows keep theirs
    write_run(tmp_path / "B", ids, labels, right, right[:5], folds=other_folds)
    out = tmp_path / "blend"
    argv = [str(tmp_path / "A"), str(tmp_path / "B"), "--output-dir", str(out)]
    assert ensemble_main(argv) == 2 and not out.exists()
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert f"{tmp_path / 'B'}: its folds differ from {tmp_path / 'A'}'s on 2 of {len(ids)} rows (r2, r3)" in line
    assert "--folds-from RUN" in line and "--allow-different-folds" in line
    assert ensemble_main([*argv, "--allow-different-folds"]) == 0
    assert json.loads((out / "ensemble.json").read_text())["same_folds"] is False
    assert "the OOF score is not comparable" in capsys.readouterr().err
