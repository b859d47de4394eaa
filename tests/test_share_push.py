"""A push that resumes (issue 31, item 1): an interrupted `python -m src.runs push` leaves the run incomplete, and the
next push sends only the files not sent yet (or edited since). A local store (a folder: SQLite and local
artifacts), no server."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from src.runs import main as runs_main
from src.tracking import mlflow_log, rundir, share
from tests.helpers import ABC_TASK, assert_refused, free_port, write_run

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def uploads(monkeypatch):
    """The run folder's files MlflowClient.log_artifact sends, in order (not the manifest, `log_dict`'s temporary
    file); ``uploads.fail_after = n`` makes the call after the n-th raise as a dropped connection would."""
    original = mlflow.MlflowClient.log_artifact

    class Uploads(list):
        fail_after: int | None = None

    sent = Uploads()

    def log_artifact(self, run_id, local_path, artifact_path=None):
        if sent.fail_after is not None and len(sent) >= sent.fail_after:
            raise mlflow.exceptions.MlflowException("connection reset by peer")
        if not local_path.endswith(rundir.SHARE_MANIFEST):
            sent.append(local_path)
        return original(self, run_id, local_path, artifact_path)

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", log_artifact)
    return sent


def test_a_push_again_sends_only_what_an_interrupted_push_did_not(tmp_path, monkeypatch, capsys, uploads):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run, store = tmp_path / "A", str(tmp_path / "mlruns")
    ids, probs = [f"r{i}" for i in range(6)], np.full((6, 3), 1 / 3)
    write_run(run, ids, ["a", "b", "c"] * 2, probs, probs[:2])
    (run / "fold0" / "history.csv").write_text("epoch,valid_accuracy\n1,0.5\n")
    every = sorted(str(p) for p in share.shared_files(run))
    assert len(every) == 5

    uploads.fail_after = 2
    assert_refused(capsys, runs_main, ["push", str(run), "--mlflow", store], tmp_path / "cache", "connection reset")
    run_id = mlflow_log.read_run_id(run, store)
    client = mlflow.MlflowClient(mlflow_log.tracking_uri(store))
    assert client.get_run(run_id).data.tags[share.SHARE_TAG] == "false"  # never looks complete half-uploaded
    receipt = json.loads((run / rundir.SHARE_RECEIPT).read_text())
    assert receipt["run_id"] == run_id and len(receipt["files"]) == 2
    first = list(uploads)

    uploads.clear()
    uploads.fail_after = None
    assert runs_main(["push", str(run), "--mlflow", store]) == 0
    assert capsys.readouterr().out.strip().endswith(f"mlflow:{run_id}")  # the same run, completed
    assert sorted(first + uploads) == every and not set(first) & set(uploads)
    stored = {a.path for a in client.list_artifacts(run_id, "share")}
    assert f"share/{rundir.SHARE_RECEIPT}" not in stored and f"share/{rundir.SHARE_MANIFEST}" in stored
    pulled = share.resolve_run(f"mlflow:{run_id}", store)
    for path in every:
        rel = Path(path).relative_to(run)
        assert (pulled / rel).read_bytes() == (run / rel).read_bytes(), rel

    uploads.clear()
    (run / "fold0" / "history.csv").write_text("epoch,valid_accuracy\n1,0.5\n2,0.7\n")  # edited since
    assert runs_main(["push", str(run), "--mlflow", store]) == 0
    assert uploads == [str(run / "fold0" / "history.csv")]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "another-cache"))
    again = share.resolve_run(f"mlflow:{run_id}", store)
    assert (again / "fold0" / "history.csv").read_text().endswith("2,0.7\n")
    assert client.get_run(run_id).data.tags[share.SHARE_TAG] == "true"
    assert share.describe(run)[share.CLASSES_TAG] == share.label_fingerprint(ABC_TASK)


def test_a_dead_tracking_server_is_one_line_in_seconds_unless_the_user_set_mlflow_s_retries(
    tmp_path, monkeypatch, capsys
):
    """Nothing listens on the port: the push fails after MLflow's retries, which `import_mlflow` makes few (the test
    would take minutes with MLflow's own); a value the user set is kept."""
    for name in mlflow_log.HTTP_DEFAULTS:  # unset, and restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    run, dead = tmp_path / "A", f"http://127.0.0.1:{free_port()}"
    write_run(run, ["r0", "r1"], ["a", "b"], np.full((2, 3), 1 / 3), np.full((1, 3), 1 / 3))
    assert_refused(capsys, runs_main, ["push", str(run), "--mlflow", dead], run, dead)
    assert {name: os.environ[name] for name in mlflow_log.HTTP_DEFAULTS} == mlflow_log.HTTP_DEFAULTS
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    mlflow_log.import_mlflow()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
