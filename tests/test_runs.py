import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest

from src import runs
from src.config import Config
from src.tracking import rundir


def _run(folder, name, history, status=None, summary=None, **settings):
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    rundir.write_config(run_dir, Config.of(**settings))
    pd.DataFrame(history).to_csv(run_dir / rundir.HISTORY, index=False)
    if status is not None:
        rundir.write_status(run_dir, status)
    if summary is not None:
        rundir.write_summary(run_dir, summary)
    return run_dir


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def folder(tmp_path):
    here = socket.gethostname()
    history = {
        "epoch": [1, 2, 3],
        "valid_accuracy": [0.5, 0.9, 0.8],
        "epoch_time_s": [1.0, 1.0, 1.5],
        "train_images_per_s": [100.0, 110.0, 120.0],
    }
    _run(tmp_path, "done", history, {"status": "finished"}, {"wall_time_s": 9.5}, lr=1e-3)
    _run(tmp_path, "stopped", history, {"status": "stopped"}, lr=1e-2)
    _run(tmp_path, "crashed", history, {"status": "crashed"}, lr=1e-2, arch="resnet18")
    _run(tmp_path, "live", history, {"status": "running", "pid": os.getpid(), "host": here}, lr=1e-2)
    _run(tmp_path, "killed", history, {"status": "running", "pid": _dead_pid(), "host": here}, lr=1e-2)
    _run(tmp_path, "old", history, lr=1e-2)  # from before status.json
    (tmp_path / "not-a-run").mkdir()
    return tmp_path


def test_the_table_has_every_run_with_its_status_settings_and_results(folder):
    table = runs.table(runs.find_runs([folder])).set_index("run")
    assert list(table.index) == ["crashed", "done", "killed", "live", "old", "stopped"]
    assert table["status"].to_dict() == {
        "crashed": "crashed",
        "done": "finished",
        "killed": "crashed",
        "live": "running",
        "old": "unknown",
        "stopped": "stopped",
    }
    assert table.loc["done", "lr"] == "0.001" and table.loc["old", "lr"] == "0.01"  # the setting that differs
    assert "batch_size" not in table.columns  # the same in every run
    assert table.loc["crashed", "arch"] == "resnet18"
    assert table.loc["done", "best"] == 0.9 and table.loc["done", "best_epoch"] == 2
    assert table.loc["done", "wall_time"] == 9.5 and table.loc["old", "wall_time"] == 3.5  # summary, else history
    assert table.loc["done", "images_per_s"] == 110.0 and table.loc["done", "epochs_run"] == 3


def test_fold_all_is_one_row_with_the_mean_of_its_folds_and_the_oof_score(tmp_path):
    run_dir = tmp_path / "cv"
    run_dir.mkdir()
    rundir.write_config(run_dir, Config.of(fold="all"))
    for fold, best in enumerate([0.9, 0.8]):
        _run(run_dir, f"fold{fold}", {"epoch": [1, 2], "valid_accuracy": [best - 0.1, best]}, fold=fold)
    (run_dir / rundir.CV_SUMMARY).write_text(json.dumps({"oof_score": 0.851, "mean": 0.85}))
    (row,) = runs.table(runs.find_runs([tmp_path])).to_dict("records")
    assert row["run"] == "cv" and row["best"] == pytest.approx(0.85) and row["oof"] == 0.851
    assert row["epochs_run"] == 4 and row["status"] == "finished"


def test_sorting_formats_and_a_bad_column(folder):
    table = runs.sort(runs.table(runs.find_runs([folder])), "lr", descending=True)
    assert list(table["run"])[-1] == "done"
    markdown = runs.render(table, "markdown").splitlines()
    assert markdown[0].startswith("| run | status | arch |") and markdown[1].startswith("| --- |")
    assert len(markdown) == 2 + 6
    assert pd.read_csv(pd.io.common.StringIO(runs.render(table, "csv")))["run"].tolist() == list(table["run"])
    with pytest.raises(ValueError, match="--sort 'speed': no such column; the columns are run, status"):
        runs.sort(table, "speed")


def test_diff_names_the_settings_and_the_score_difference(folder):
    text = runs.diff(folder / "done", folder / "crashed")
    assert "arch" in text and "lr" in text and "0.001" in text
    assert "best valid_accuracy: 0.9000 vs 0.9000 (+0.0000, crashed minus done)" in text


def test_the_command_line(folder, capsys):
    assert runs.main([str(folder), "--sort", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "arch"] and len(lines) == 7
    assert runs.main([str(folder), "--diff", "done", "nope"]) == 2
    assert "--diff nope: no run folder" in capsys.readouterr().err
    assert runs.main([str(folder / "missing")]) == 2
