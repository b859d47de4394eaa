"""A run shared through a tracking store (issue 31): `python -m src.runs push`, then ``mlflow:<run-id>`` where a
run folder is read. A local store (a folder: SQLite and local artifacts), no server."""

import json
import os
import time

import numpy as np
import pytest

from src.ensemble import main as ensemble_main
from src.predict import main as predict_main
from src.runs import main as runs_main
from src.tracking import mlflow_log, share
from tests.helpers import ABC_TASK, assert_refused, blend_runs, write_run

pytest.importorskip("mlflow")


@pytest.fixture
def shared(tmp_path, monkeypatch, capsys):
    """Two runs A and B (complementary halves), A pushed to a local store; the cache under tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    targets, _, _, left, right = blend_runs(np.random.default_rng(3))
    ids, labels = [f"r{i}" for i in range(len(targets))], [ABC_TASK.classes[t] for t in targets]
    write_run(tmp_path / "A", ids, labels, left, left[:5])
    write_run(tmp_path / "B", ids[::-1], labels[::-1], right[::-1], right[:5])
    store = str(tmp_path / "mlruns")
    assert runs_main(["push", str(tmp_path / "A"), "--mlflow", store]) == 0
    run_id = capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]
    return tmp_path, store, run_id


def _blend(tmp_path, name, *runs):
    out = tmp_path / name
    assert ensemble_main([*map(str, runs), "--output-dir", str(out)]) == 0
    return json.loads((out / "ensemble.json").read_text()), (out / "oof.csv").read_bytes()


def test_a_pushed_run_blends_as_its_folder_and_is_cached(shared, monkeypatch):
    from mlflow import MlflowClient

    tmp_path, store, run_id = shared
    client = MlflowClient(mlflow_log.tracking_uri(store))
    run = client.get_run(run_id)
    assert run.data.tags[share.SHARE_TAG] == "true" and run.info.run_name == "A"
    local, local_oof = _blend(tmp_path, "local", tmp_path / "A", tmp_path / "B")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_log.tracking_uri(store))
    pulled, pulled_oof = _blend(tmp_path, "pulled", f"mlflow:{run_id}", tmp_path / "B")
    assert pulled_oof == local_oof
    assert list(pulled.pop("runs").values()) == list(local.pop("runs").values())
    assert pulled.pop("submission").endswith("pulled/submission.csv") and local.pop("submission")
    assert pulled == local
    cached = tmp_path / "cache" / "kaggle-trainer" / "mlflow" / run_id
    assert (cached / "oof.csv").read_bytes() == (tmp_path / "A" / "oof.csv").read_bytes()
    assert (cached / "fold0" / "classes.json").is_file() and (cached / "share_manifest.json").is_file()

    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the cache answers without the store
    assert _blend(tmp_path, "again", f"mlflow:{run_id}", tmp_path / "B")[1] == local_oof
    stale = cached.parent / f".{run_id}.killed"  # what a pull killed outright left, two hours ago
    (stale / "share").mkdir(parents=True)
    os.utime(stale, (time.time() - 7200,) * 2)
    (cached / "oof.csv").write_text("id,fold\n")  # damaged: downloaded again
    (cached / "fold0" / "classes.json").unlink()  # missing: downloaded again
    assert ensemble_main([f"mlflow:{run_id}", str(tmp_path / "B"), "--mlflow", store,
                          "--output-dir", str(tmp_path / "again")]) == 0
    assert (cached / "oof.csv").read_bytes() == (tmp_path / "A" / "oof.csv").read_bytes()
    assert (cached / "fold0" / "classes.json").is_file()
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_incomplete_unknown_and_corrupted_runs_are_refused_in_one_line(shared, capsys, monkeypatch):
    from mlflow import MlflowClient

    tmp_path, store, run_id = shared
    client = MlflowClient(mlflow_log.tracking_uri(store))
    args = [str(tmp_path / "B"), "--mlflow", store, "--output-dir", str(tmp_path / "out")]
    assert_refused(capsys, ensemble_main, ["mlflow:0123456789abcdef", *args], tmp_path / "B", "not found")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri sets it in this process
    no_store = [f"mlflow:{run_id}", str(tmp_path / "B"), "--output-dir", str(tmp_path / "x")]
    assert_refused(capsys, ensemble_main, no_store, tmp_path / "B", "pass --mlflow URI or set MLFLOW_TRACKING_URI")
    client.set_tag(run_id, share.SHARE_TAG, "false")  # as a push interrupted
    assert_refused(capsys, ensemble_main, [f"mlflow:{run_id}", *args], tmp_path / "B", "not shared completely")
    assert runs_main(["push", str(tmp_path / "A"), "--mlflow", store]) == 0  # pushed again: the same run, complete
    assert capsys.readouterr().out.strip().endswith(f"mlflow:{run_id}")

    (stored,) = (tmp_path / "mlruns" / "artifacts").glob(f"**/{run_id}/artifacts/share/oof.csv")
    stored.write_text(stored.read_text().replace("r1,", "r2,", 1))  # the store's copy damaged
    assert_refused(capsys, ensemble_main, [f"mlflow:{run_id}", *args], tmp_path / "B", "differ from the manifest")
    assert not (tmp_path / "cache" / "kaggle-trainer" / "mlflow" / run_id).exists()


def test_predict_reads_a_shared_run_and_needs_an_output_dir(shared, capsys):
    tmp_path, store, run_id = shared
    assert_refused(capsys, predict_main, ["--run", f"mlflow:{run_id}", "--mlflow", store, "--oof"], tmp_path / "A",
                   "pass --output-dir")
    argv = ["--run", f"mlflow:{run_id}", "--mlflow", store, "--oof", "--output-dir", str(tmp_path / "p")]
    line = assert_refused(capsys, predict_main, argv, tmp_path / "A", "best")  # pushed without --with-checkpoints
    assert run_id in line
