"""python -m src.ensemble: OOF and test predictions of two runs blended into files; bad input named."""

import json

import numpy as np
import pandas as pd
import yaml

from src.ensemble import main as ensemble_main
from src.oof import predictions_frame
from src.targets import Head, Task
from tests.helpers import blend_runs

TASK = Task("single", (Head("label", ("a", "b", "c")),))


def _write_run(folder, ids, labels, probs, test_probs, task=TASK):
    folder.mkdir(parents=True)
    (folder / "fold0").mkdir()
    (folder / "fold0" / "classes.json").write_text(json.dumps(task.to_dict()))
    (folder / "fold0" / "config.yaml").write_text(yaml.safe_dump({"arch": "effnet-b0"}))  # a flat config
    labels_frame = pd.DataFrame({"label": labels})
    predictions_frame(ids, probs, task, folds=np.arange(len(ids)) % 2, labels=labels_frame).to_csv(
        folder / "oof.csv", index=False
    )
    predictions_frame([f"t{i}" for i in range(len(test_probs))], test_probs, task).to_csv(
        folder / "test_predictions.csv", index=False
    )


def test_cli_blends_oof_and_test_and_names_bad_input(tmp_path, capsys):
    targets, good, _, left, right = blend_runs(np.random.default_rng(1))
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
