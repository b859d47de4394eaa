import json

import pytest

from src.config import Config, format_duration
from src.tracking import rundir
from src.tracking.report import Outcome, RunReport, detail_of
from src.training.stopping import Stopped
from tests.helpers import webhook_server

SUMMARY = {
    "best_valid_score": 0.975,
    "best_epoch": 7,
    "selected_by": "valid_accuracy",
    "epochs_run": 9,
    "stopped_early_at_epoch": None,
    "train_images_per_s": 310.5,
    "wall_time_s": 61.0,
}


def _report(tmp_path, **track):
    config = Config.of(output_dir=str(tmp_path), lr=1e-3, **track)
    return RunReport(config, "python -m src.train --lr 0.001"), tmp_path / "run-a"


def test_a_finished_run_is_marked_and_logged_with_its_settings_score_and_note(tmp_path):
    report, run_dir = _report(tmp_path, note="lower lr helps?")
    with report:
        run_dir.mkdir()
        report.started(run_dir)
        assert rundir.read_status(run_dir)["status"] == "running"
        report.summary = SUMMARY
    status = rundir.read_status(run_dir)
    assert status["status"] == "finished" and status["command"] == "python -m src.train --lr 0.001"
    text = (tmp_path / "NOTES.md").read_text()
    assert "run-a: finished" in text
    assert "- command: `python -m src.train --lr 0.001`" in text
    assert "`lr=0.001`" in text
    assert "best valid_accuracy 0.9750 at epoch 7" in text
    assert "9 epochs, 310.5 train images/s, wall time" in text
    assert "- note: lower lr helps?" in text
    assert "- code: " in text


@pytest.mark.parametrize(
    "error, status, detail",
    [
        (RuntimeError("CUDA error: an illegal memory access\nsecond line"), "crashed", "second line"),
        (KeyboardInterrupt(), "crashed", "KeyboardInterrupt"),
        (Stopped("SIGTERM", 143, position="epoch 2, iteration 9"), "stopped", "stopped by SIGTERM"),
    ],
)
def test_a_crash_or_a_stop_is_recorded_and_the_error_goes_on(tmp_path, error, status, detail):
    report, run_dir = _report(tmp_path, notes_file=str(tmp_path / "log.md"))
    with pytest.raises(type(error)), report:
        run_dir.mkdir()
        report.started(run_dir)
        raise error
    assert rundir.read_status(run_dir)["status"] == status
    assert detail in rundir.read_status(run_dir)["detail"]
    text = (tmp_path / "log.md").read_text()
    assert f"run-a: {status}" in text and detail in text
    assert not (tmp_path / "NOTES.md").exists()


def test_no_notes_and_no_folder_write_nothing(tmp_path):
    report, run_dir = _report(tmp_path, notes=False)
    with report:
        run_dir.mkdir()
        report.started(run_dir)
    assert rundir.read_status(run_dir)["status"] == "finished"
    assert not (tmp_path / "NOTES.md").exists()
    report, _ = _report(tmp_path)
    with pytest.raises(ValueError), report:  # bad input before any run folder: nothing to report
        raise ValueError("--lr: bad")
    assert not (tmp_path / "NOTES.md").exists()


def test_the_first_folder_named_is_the_one_reported(tmp_path):
    report, run_dir = _report(tmp_path)
    with report:
        report.started(run_dir)  # --fold all's own folder
        report.started(run_dir / "fold0")
    assert "## " in (tmp_path / "NOTES.md").read_text() and "run-a: finished" in (tmp_path / "NOTES.md").read_text()
    assert not (run_dir / "fold0").exists()


def test_notifications_report_early_stopping_and_a_failing_target_breaks_nothing(tmp_path):
    with webhook_server() as (url, received):
        report, run_dir = _report(tmp_path, notify=f"{url},http://127.0.0.1:9/nothing-listens")
        with report:
            run_dir.mkdir()
            report.started(run_dir)
            report.summary = SUMMARY | {"stopped_early_at_epoch": 9}
    (body,) = received
    assert body["title"] == "finished (early stopping at epoch 9): run-a: best valid_accuracy 0.9750 at epoch 7"
    assert body["status"] == "finished" and body["run_dir"] == str(run_dir)
    assert json.loads(json.dumps(body["summary"]))["best_epoch"] == 7


def test_outcome_of_fold_all_reports_the_oof_score(tmp_path):
    summary = {"metric": "accuracy", "fold_scores": [0.97, 0.98], "mean": 0.975, "std": 0.005, "oof_score": 0.9751}
    outcome = Outcome("finished", tmp_path / "cv", summary, 3700.0)
    assert outcome.title == "finished: cv: OOF accuracy 0.9751 (folds 0.9750 +- 0.0050)"
    assert "wall time 1h 01m" in outcome.lines()[1]


def test_small_helpers():
    assert format_duration(42) == "42.0 s" and format_duration(725) == "12m 05s"
    assert detail_of(None) == "" and detail_of(ValueError("bad value")) == "ValueError: bad value"
