"""Team tracking on a real MLflow server (127.0.0.1, SQLite backend store), and its failures."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

from src.ensemble import main as ensemble_main
from src.runs import main as runs_main
from src.tracking import mlflow_log
from src.train import main
from tests.helpers import ABC_TASK, TINY, blend_runs, free_port, write_run


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free loopback port with a SQLite store and proxied artifacts (a local folder); yields
    its URL."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts", "--workers", "1"]
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            os.killpg(server.pid, signal.SIGKILL)
            pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
    log.close()


@pytest.mark.slow  # a real MLflow server and two runs (~60 s)
def test_a_run_and_its_continuation_are_one_mlflow_run_on_the_server(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    flags = [*TINY, "--arch", "resnet18", "--output-dir", str(tmp_path), "--run-name", "tracked"]
    flags += ["--mlflow", mlflow_server, "--mlflow-experiment", "team", "--mlflow-artifacts", "--note", "baseline"]
    assert main([*flags, "--epochs", "2"]) == 0
    assert main([*flags, "--epochs", "3"]) == 0  # the same command with more epochs continues the run

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("team")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["arch"] == "resnet18" and run.data.params["lr"] == "0.004"
    assert run.data.tags["note"] == "baseline" and run.data.tags["commit"]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid accuracy")]
    assert steps == [1, 2, 3]
    assert "train loss" in run.data.metrics and "summary_best_valid_accuracy" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "valid_predictions.csv" in artifacts and any(a.startswith("best_model_") for a in artifacts)
    assert run.data.tags["share.complete"] == "true"  # pushed when it ended, with --mlflow-artifacts its checkpoint
    assert any(a.path.startswith("share/best_model_") for a in client.list_artifacts(run.info.run_id, "share"))


def test_a_local_folder_needs_no_server():
    assert mlflow_log.tracking_uri("http://10.0.0.2:5000") == "http://10.0.0.2:5000"
    assert mlflow_log.tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert mlflow_log.is_folder("./mlruns") and not mlflow_log.is_folder("file:///tmp/mlruns")


def test_without_mlflow_or_with_a_bad_store_the_run_stops_with_one_line(tmp_path, monkeypatch, capsys):
    flags = [*TINY, "--epochs", "1", "--output-dir", str(tmp_path)]
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    assert main([*flags, "--mlflow", dead]) == 2
    assert f"error: --mlflow {dead}: cannot use the tracking store" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    assert main([*flags, "--mlflow", str(tmp_path / "mlruns")]) == 2
    assert "error: --mlflow needs the mlflow package: pip install mlflow" in capsys.readouterr().err


@pytest.mark.slow  # a real MLflow server (~20 s to start)
def test_a_teammate_blends_a_pushed_run_as_its_folder(mlflow_server, tmp_path, monkeypatch, capsys):
    targets, _, _, left, right = blend_runs(np.random.default_rng(5))
    ids, labels = [f"r{i}" for i in range(len(targets))], [ABC_TASK.classes[t] for t in targets]
    write_run(tmp_path / "A", ids, labels, left, left[:4])
    write_run(tmp_path / "B", ids[::-1], labels[::-1], right[::-1], right[:4])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, value in (("LOGNAME", "ana"), ("USER", "ana"), ("XDG_CACHE_HOME", str(tmp_path / "ana"))):
        monkeypatch.setenv(name, value)  # user A pushes
    assert runs_main(["push", str(tmp_path / "A"), "--mlflow", mlflow_server]) == 0
    run_id = capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]

    for name, value in (("LOGNAME", "bob"), ("USER", "bob"), ("XDG_CACHE_HOME", str(tmp_path / "bob"))):
        monkeypatch.setenv(name, value)  # user B blends A's run with their own
    local, pulled = tmp_path / "local", tmp_path / "pulled"
    assert ensemble_main([str(tmp_path / "A"), str(tmp_path / "B"), "--output-dir", str(local)]) == 0
    assert ensemble_main([f"mlflow:{run_id}", str(tmp_path / "B"), "--mlflow", mlflow_server,
                          "--output-dir", str(pulled)]) == 0
    assert (pulled / "oof.csv").read_bytes() == (local / "oof.csv").read_bytes()
    assert (tmp_path / "bob" / "kaggle-trainer" / "mlflow" / run_id / "oof.csv").is_file()
    capsys.readouterr()

    monkeypatch.chdir(tmp_path)  # no experiments/ folder of local runs here
    assert runs_main(["--mlflow", mlflow_server, "--user", "ana", "--format", "csv"]) == 0
    (row,) = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out)).to_dict("records")
    assert row["run"] == f"mlflow:{run_id}" and row["user"] == "ana" and row["arch"] == "effnet-b0"
