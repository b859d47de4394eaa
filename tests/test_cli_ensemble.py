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
