"""The end of a run, end to end: its status, its notes entry, the notifications and the run table."""

import src.train
from src import runs
from src.tracking import notes, rundir
from src.train import main
from src.training.stopping import TIME_LIMIT_EXIT
from tests.helpers import TINY, webhook_server


def test_finished_stopped_and_crashed_runs_are_logged_notified_and_listed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    with webhook_server() as (url, received):
        flags = [*TINY, "--arch", "resnet18", "--epochs", "1", "--output-dir", str(out), "--notify", url]
        assert main([*flags, "--run-name", "done", "--note", "the baseline"]) == 0
        assert main([*flags, "--run-name", "stopped", "--time-limit", "1s"]) == TIME_LIMIT_EXIT

        def crash(*args, **kwargs):
            raise RuntimeError("CUDA error: device-side assert triggered")

        monkeypatch.setattr(src.train, "train", crash)
        try:
            main([*flags, "--run-name", "crashed"])
        except RuntimeError:
            pass
    assert {run.name: rundir.read_status(run)["status"] for run in out.iterdir() if run.is_dir()} == {
        "done": "finished",
        "stopped": "stopped",
        "crashed": "crashed",
    }
    titles = [body["title"] for body in received]
    assert titles[0].startswith("finished: done: best valid_accuracy ")
    assert titles[1] == "stopped: stopped"
    assert titles[2] == "crashed: crashed"
    assert received[2]["detail"] == "RuntimeError: CUDA error: device-side assert triggered"
    assert "continue with: python -m src.train" in received[1]["detail"]

    text = (out / "NOTES.md").read_text()
    assert text.count("\n## ") == 3
    done = text.split("\n## ")[1]
    assert "done: finished" in done and "- note: the baseline" in done
    assert f"- command: `python -m src.train {' '.join(TINY)}" in done
    assert f"- code: {notes.git_state()}" in done
    # the webhook's secret path is in no file a run writes for others to read: the notes log, status.json
    assert "secret-token" not in text and "--notify http://127.0.0.1:" in done
    assert all("secret-token" not in rundir.read_status(run)["command"] for run in out.iterdir() if run.is_dir())
    assert all(f"`{setting}`" in done for setting in ("arch=resnet18", "epochs=1", "data_fraction=0.04"))

    capsys.readouterr()
    assert runs.main([str(out)]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows == {"crashed": "crashed", "done": "finished", "stopped": "stopped"}
