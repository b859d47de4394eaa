"""A run shared through a tracking store (issue 31): `python -m src.runs push`, then ``mlflow:<run-id>`` where a
run folder is read. A local store (a folder: SQLite and local artifacts), no server."""

import json
import os
import time
from pathlib import Path

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

    experiment = client.get_experiment(run.info.experiment_id).name  # by name: the newest shared run so named
    assert share.resolve_run(f"mlflow:{experiment}/A", store) == cached
    with pytest.raises(FileNotFoundError, match="no run named 'Z' shared completely"):
        share.resolve_run(f"mlflow:{experiment}/Z", store)
    with pytest.raises(FileNotFoundError, match="has no experiment 'nowhere'"):
        share.resolve_run("mlflow:nowhere/A", store)


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


def _fake_training(monkeypatch, folder):
    """`src.train`'s training replaced by writing a finished run folder (a fold's, or a --fold all run's)."""
    from src import train

    def one_fold(config, requests=None, started=None, handlers=None):
        run_dir = folder / config.run.run_name
        write_run(run_dir, ["r0", "r1"], ["a", "b"], np.full((2, 3), 1 / 3), np.full((1, 3), 1 / 3))
        (run_dir / "config.yaml").write_text((run_dir / "fold0" / "config.yaml").read_text())
        (run_dir / "folds.csv").write_text("id,fold\nr0,0\nr1,1\n")
        summary = {"best_valid_score": 0.5, "best_epoch": 1, "selected_by": "valid_accuracy", "run_dir": str(run_dir)}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        if started is not None:
            started(run_dir)
        return summary

    def every_fold(config, train_fold, *args):
        cv = {"fold_scores": [0.4, 0.6], "mean": 0.5, "std": 0.1, "oof_score": 0.55, "metric": "accuracy"}
        summary = one_fold(config, started=args[-1]) | cv
        (Path(summary["run_dir"]) / "cv_summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(train, "run", one_fold)
    monkeypatch.setattr(train, "run_all_folds", every_fold)
    return train


def test_a_run_trained_with_mlflow_pushes_itself_and_a_failed_push_only_warns(tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train = _fake_training(monkeypatch, tmp_path)
    store = str(tmp_path / "mlruns")
    client = MlflowClient(mlflow_log.tracking_uri(store))
    for name, extra in (("one", []), ("cv", ["--fold", "all", "--mlflow-artifacts"])):
        assert train.main(["--output-dir", str(tmp_path), "--run-name", name, "--mlflow", store, *extra]) == 0
        run_id = mlflow_log.read_run_id(tmp_path / name, store)
        tags = client.get_run(run_id).data.tags
        assert tags[share.SHARE_TAG] == "true" and tags["share.best"] == "0.5"
        assert tags[share.FOLDS_TAG] == share.folds_fingerprint(tmp_path / name) and len(tags[share.FOLDS_TAG]) == 12
        assert tags[share.CLASSES_TAG] == share.classes_fingerprint(tmp_path / name) is not None
        shared = {a.path for a in client.list_artifacts(run_id, "share")}
        assert {"share/oof.csv", "share/folds.csv", "share/share_manifest.json"} <= shared
    assert client.get_run(run_id).data.tags["share.oof"] == "0.55"  # the --fold all run: its CV run
    assert client.get_run(run_id).data.metrics["summary_oof_score"] == 0.55

    def refused(*args, **kwargs):
        raise ConnectionError("--mlflow x: cannot use the tracking store: gone")

    monkeypatch.setattr(share, "push", refused)
    assert train.main(["--output-dir", str(tmp_path), "--run-name", "late", "--mlflow", store]) == 0
    assert "could not push" in caplog.text and "python -m src.runs push" in caplog.text


def test_an_ensemble_pushes_as_a_run_tagged_with_its_members(shared, capsys):
    from mlflow import MlflowClient

    tmp_path, store, run_id = shared
    _blend(tmp_path, "blend", f"mlflow:{run_id}", tmp_path / "B")
    assert runs_main(["push", str(tmp_path / "blend"), "--mlflow", store]) == 0
    blend_id = capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]
    tags = MlflowClient(mlflow_log.tracking_uri(store)).get_run(blend_id).data.tags
    assert tags[share.MEMBERS_TAG] == f"mlflow:{run_id},B" and tags[share.SHARE_TAG] == "true"
    assert float(tags["share.oof"]) == json.loads((tmp_path / "blend" / "ensemble.json").read_text())["oof_blend"]
    assert share.resolve_run(f"mlflow:{blend_id}", store).joinpath("ensemble.json").is_file()


def test_the_team_table_lists_the_shared_runs_beside_local_ones(shared, capsys, monkeypatch):
    tmp_path, store, run_id = shared
    monkeypatch.setenv("LOGNAME", "bea")
    (tmp_path / "B" / "config.yaml").write_text("arch: effnet-b0\n")
    assert runs_main(["push", str(tmp_path / "B"), "--mlflow", store]) == 0
    b_id = capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]
    local = tmp_path / "mine"
    local.mkdir()
    (tmp_path / "A").rename(local / "A")
    (local / "A" / "config.yaml").write_text("arch: resnet18\n")
    assert runs_main([str(local), "--mlflow", store, "--format", "csv", "--sort", "run"]) == 0
    import pandas as pd

    frame = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out)).set_index("run")
    assert set(frame.index) == {"A", f"mlflow:{run_id}", f"mlflow:{b_id}"}
    assert list(frame.columns[:6]) == ["status", "arch", "user", "date", "folds", "classes"]
    assert frame.loc["A", "classes"] == frame.loc[f"mlflow:{b_id}", "classes"] == share.label_fingerprint(ABC_TASK)
    assert frame.loc[f"mlflow:{b_id}", "user"] == "bea" and frame.loc["A", "arch"] == "resnet18"
    assert frame.loc[f"mlflow:{run_id}", "arch"] == "effnet-b0"  # the params a push logs
    monkeypatch.chdir(tmp_path)  # no experiments/ folder of local runs here
    assert runs_main(["--mlflow", store, "--user", "bea", "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("mlflow:") == 1
    assert runs_main(["--mlflow", store, "--experiment", "nope"]) == 2
    assert runs_main(["--diff", str(local / "A"), f"mlflow:{b_id}", "--mlflow", store]) == 0
    assert "resnet18" in capsys.readouterr().out.splitlines()[1]  # arch: the setting that differs


def test_a_soups_members_are_the_runs_of_its_ingredients(tmp_path):
    for fold in (0, 1):
        (tmp_path / "soup" / f"fold{fold}").mkdir(parents=True)
        ingredients = [f"/x/runA/fold{fold}/best_model_1.pt", f"/x/runB/fold{fold}/best_model_2.pt"]
        (tmp_path / "soup" / f"fold{fold}" / "soup.json").write_text(json.dumps({"ingredients": ingredients}))
    assert share.members(tmp_path / "soup") == ["runA", "runB"]
    assert "soup.json" in share.SHARED_FILES and share.describe(tmp_path / "soup")[share.MEMBERS_TAG] == "runA,runB"
