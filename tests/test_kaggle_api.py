"""download, submit, submissions and bundle --upload/--push through the Kaggle client, replaced at its boundary by
`tests.kaggle_stand_in` (the only stand-in in the suite); credentials and the missing package through the real
client code."""

import inspect
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from src.kaggle import client, download
from src.kaggle.cli import main
from src.runs import main as runs_main
from tests import helpers
from tests.kaggle_stand_in import StandInKaggleApi


def _competition(tmp_path):
    """A small competition folder: train.csv + train/ images, test.csv + test/, sample_submission.csv."""
    files = tmp_path / "served"
    csv_path, _ = helpers.image_folder(files, n=24, num_classes=3)
    test = files / "test"
    test.mkdir()
    for i in range(6):
        (test / f"t{i}.png").write_bytes((files / "train" / "img00000.png").read_bytes())
    ids = [f"t{i}" for i in range(6)]
    pd.DataFrame({"id": ids}).to_csv(files / "test.csv", index=False)
    pd.DataFrame({"id": ids, "label": "c0"}).to_csv(files / "sample_submission.csv", index=False)
    return files


def test_the_stand_in_keeps_the_real_clients_signatures():
    pytest.importorskip("kaggle", reason="the kaggle package is optional; without it there is nothing to compare")
    from kaggle.api.kaggle_api_extended import KaggleApi

    for name, method in inspect.getmembers(StandInKaggleApi, inspect.isfunction):
        if not name.startswith("_"):
            real = list(inspect.signature(getattr(KaggleApi, name)).parameters)
            assert list(inspect.signature(method).parameters) == real, name


def test_download_unzips_then_continues_an_interrupted_extraction(tmp_path, capsys):
    served = _competition(tmp_path)
    api = StandInKaggleApi("shapes", served)
    out = tmp_path / "data" / "shapes"
    assert main(["download", "shapes", "--out", str(out)], connect=lambda: api) == 0
    names = sorted(str(p.relative_to(served)) for p in served.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "train.yaml") == names
    assert not (out / "shapes.zip").exists() and api.downloads == 1
    assert "--label-col label" in capsys.readouterr().out and (out / "train.yaml").is_file()  # then inspected

    assert main(["download", "shapes", "--out", str(out)], connect=lambda: api) == 0
    assert api.downloads == 1 and "all 33 files already" in capsys.readouterr().out

    (out / "train" / "img00003.png").write_bytes(b"cut short")  # a truncated file, and one never written
    (out / "test.csv").unlink()
    untouched = (out / "train" / "img00004.png").stat().st_mtime_ns
    assert main(["download", "shapes", "--out", str(out)], connect=lambda: api) == 0
    assert "2 of 33 files to fetch" in capsys.readouterr().out and api.downloads == 2
    assert (out / "train" / "img00003.png").read_bytes() == (served / "train" / "img00003.png").read_bytes()
    assert (out / "test.csv").read_text() == (served / "test.csv").read_text()
    assert (out / "train" / "img00004.png").stat().st_mtime_ns == untouched
    assert not list(out.rglob("*.partial"))


def test_an_archive_member_outside_the_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        download.extract(archive, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize("status, expected", [(403, "accept the competition's rules at https://www.kaggle.com/"
                                                     "competitions/shapes/rules"), (404, "use the name in its URL"),
                                              (401, "kaggle.json")])
def test_refusals_say_what_to_do_in_one_line(tmp_path, capsys, status, expected):
    api = StandInKaggleApi("shapes", _competition(tmp_path), refuse=status)
    assert main(["download", "shapes", "--out", str(tmp_path / "d")], connect=lambda: api) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err


def test_missing_package_and_missing_credentials(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kaggle", None)
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)
    assert main(["download", "shapes"]) == 2
    assert capsys.readouterr().err.strip() == "error: the Kaggle API needs the kaggle package: pip install kaggle"
    monkeypatch.undo()
    pytest.importorskip("kaggle")
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="no Kaggle credentials"):
        client.connect()


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A tiny run trained from the inspected competition's train.yaml, with its submission."""
    from src.predict import main as predict_main
    from src.train import main as train_main

    tmp = tmp_path_factory.mktemp("trained")
    data = _competition(tmp)
    assert main(["inspect", str(data), "--competition", "shapes"]) == 0
    flags = ["--epochs", "1", "--arch", "resnet18", "--no-progress", "--no-pictures", "--batch-size", "8"]
    assert train_main(["--config", str(data / "train.yaml"), *flags, "--output-dir", str(tmp / "runs"),
                       "--run-name", "r", "--no-notes"]) == 0
    assert predict_main(["--run", str(tmp / "runs" / "r")]) == 0
    return tmp


@pytest.fixture
def trained(trained_once, tmp_path):
    """A copy of the trained run (each test changes it) writing its notes to ``tmp_path/NOTES.md``; the served
    competition in ``tmp_path/served``."""
    shutil.copytree(trained_once / "served", tmp_path / "served")
    run = tmp_path / "runs" / "r"
    shutil.copytree(trained_once / "runs" / "r", run)
    notes = tmp_path / "NOTES.md"
    for config_file in run.rglob("config.yaml"):
        config = yaml.safe_load(config_file.read_text())
        config["track"] |= {"notes": True, "notes_file": str(notes)}
        config_file.write_text(yaml.safe_dump(config))
    return run, notes


def test_submit_checks_waits_for_the_score_and_records_it(trained, tmp_path, capsys):
    run, notes = trained
    api = StandInKaggleApi("shapes", tmp_path / "served", score=lambda path: "0.8333", pending_polls=2)
    capsys.readouterr()
    assert main(["submit", str(run), "-m", "first try", "--poll", "0.01"], connect=lambda: api) == 0
    out = capsys.readouterr().out
    assert "6 rows match" in out and "public score 0.8333" in out
    assert api.submitted[0]["file"] == str(run / "submission.csv") and api.submitted[0]["message"] == "first try"
    record = pd.read_csv(run / "kaggle_submissions.csv", dtype=str)
    assert record.loc[0, ["competition", "message", "status", "public_score"]].tolist() == [
        "shapes", "first try", "complete", "0.8333"]
    assert len(record.loc[0, "sha256"]) == 64
    assert "submitted to shapes" in notes.read_text() and "public score 0.8333" in notes.read_text()
    assert runs_main([str(run.parent), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table.loc[0, "public_score"] == pytest.approx(0.8333)


def test_a_score_still_pending_is_recorded_and_filled_in_later(trained, tmp_path, capsys):
    run, _ = trained
    api = StandInKaggleApi("shapes", tmp_path / "served", pending_polls=10)
    assert main(["submit", str(run), "-m", "slow", "--timeout", "0", "--poll", "0"], connect=lambda: api) == 0
    assert "still pending" in capsys.readouterr().out
    assert pd.read_csv(run / "kaggle_submissions.csv", dtype=str).loc[0, "status"] == "pending"
    api.pending_polls = 0
    assert main(["submissions", "shapes", "--runs", str(run.parent)], connect=lambda: api) == 0
    listed = capsys.readouterr().out
    assert "slow" in listed and " r" in listed and "0.99" in listed
    record = pd.read_csv(run / "kaggle_submissions.csv", dtype=str)
    assert record.loc[0, ["status", "public_score"]].tolist() == ["complete", "0.99"] and len(record) == 1


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.iloc[::-1], "row 2 holds id 't5'"),
    (lambda s: s.iloc[:-1], "5 rows for 6"),
    (lambda s: s.rename(columns={"label": "class"}), "columns ['id', 'class']"),
    (lambda s: s.assign(label=""), "empty value in column 'label' at row 2"),
])
def test_a_submission_that_does_not_match_the_sample_is_not_uploaded(trained, tmp_path, capsys, damage, message):
    run, _ = trained
    submission = pd.read_csv(run / "submission.csv", dtype=str)
    damage(submission).to_csv(run / "submission.csv", index=False)
    api = StandInKaggleApi("shapes", tmp_path / "served")
    assert main(["submit", str(run), "-m", "x"], connect=lambda: api) == 2
    err = capsys.readouterr().err
    assert message in err and api.submitted == [] and not (run / "kaggle_submissions.csv").exists()


def test_submit_help_shows_the_message_as_required_once(capsys):
    with pytest.raises(SystemExit, match="0"):
        main(["submit", "--help"])
    shown = capsys.readouterr().out
    assert "-m STR [--timeout" in shown  # the usage line: not in brackets
    entry = " ".join(shown.split("--message STR", 1)[1].split("--timeout", 1)[0].split())
    assert entry.endswith("(required)") and "required" not in entry[: -len("(required)")] and "default" not in entry


def test_bundle_upload_creates_then_versions_the_dataset_and_pushes(trained, tmp_path):
    run, _ = trained
    image = tmp_path / "freeze.txt"  # an image that has everything: the bundle holds the project's wheel only
    image.write_text(subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True).stdout)
    api = StandInKaggleApi("shapes", tmp_path / "served")
    flags = ["bundle", str(run), "--out", str(tmp_path / "b"), "--upload", "me/shapes-bundle", "--push"]
    flags += ["--image-has", str(image)]
    assert main(flags, connect=lambda: api) == 0
    assert main(flags, connect=lambda: api) == 0
    assert api.datasets["me/shapes-bundle"][0] == "created" and len(api.datasets["me/shapes-bundle"]) == 2
    assert api.pushed == [str(tmp_path / "b")] * 2
    kernel = json.loads((tmp_path / "b" / "kernel-metadata.json").read_text())
    assert kernel["dataset_sources"] == ["me/shapes-bundle"] and kernel["id"] == "me/shapes-bundle-inference"
    assert [p.name.split("-")[0] for p in (tmp_path / "b" / "wheels").iterdir()] == ["kaggle_ignite_trainer"]


def test_a_shared_run_is_submitted_from_a_copy_of_its_own_and_its_public_score_tags_it(
    trained, tmp_path, capsys, monkeypatch
):
    """submit mlflow:<run-id>: checked in the download cache, copied into experiments/<run>-<id[:8]> (or --out) and
    recorded there; the public score tags the MLflow run (the team table's column), as it does for a local folder
    with mlflow.json; a failure to tag only warns; a shared run without submission.csv says to predict it."""
    from mlflow import MlflowClient

    from src.tracking import mlflow_log, share

    run, _ = trained
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = str(tmp_path / "mlruns")
    assert runs_main(["push", str(run), "--mlflow", store]) == 0
    run_id = capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]
    client = MlflowClient(mlflow_log.tracking_uri(store))
    api = StandInKaggleApi("shapes", tmp_path / "served", score=lambda path: "0.8333", pending_polls=0)
    shared = ["submit", f"mlflow:{run_id}", "-m", "team", "--mlflow", store, "--poll", "0"]
    assert main(shared, connect=lambda: api) == 0
    copy = tmp_path / "experiments" / f"r-{run_id[:8]}"
    assert Path(api.submitted[0]["file"]).resolve() == copy / "submission.csv"
    assert pd.read_csv(copy / "kaggle_submissions.csv", dtype=str).loc[0, "public_score"] == "0.8333"
    cached = tmp_path / "cache" / "kaggle-trainer" / "mlflow" / run_id
    assert not (cached / "kaggle_submissions.csv").exists() and (cached / "submission.csv").is_file()
    assert client.get_run(run_id).data.tags[share.PUBLIC_TAG] == "0.8333"
    assert f"{share.PUBLIC_TAG} = 0.8333" in capsys.readouterr().out
    assert runs_main(["--mlflow", store, "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out)).set_index("run")
    assert table.loc[f"mlflow:{run_id}", "public_score"] == pytest.approx(0.8333)
    assert main(shared, connect=lambda: api) == 0  # the same copy again: a second record in it
    assert len(pd.read_csv(copy / "kaggle_submissions.csv", dtype=str)) == 2

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("mine")
    helpers.assert_refused(capsys, lambda argv: main(argv, connect=lambda: api), [*shared, "--out", "taken"],
                           tmp_path / "taken", "--out taken: exists and is not a copy of")
    api.score = lambda path: "0.9"  # a local folder with mlflow.json (written by its push) tags its run too
    assert main(["submit", str(run), "-m", "local", "--poll", "0"], connect=lambda: api) == 0
    assert client.get_run(run_id).data.tags[share.PUBLIC_TAG] == "0.9"
    api.score, api.pending_polls = (lambda path: "0.95"), 10  # scored after submit gave up: submissions tags it
    assert main(["submit", str(run), "-m", "later", "--timeout", "0", "--poll", "0"], connect=lambda: api) == 0
    assert client.get_run(run_id).data.tags[share.PUBLIC_TAG] == "0.9"
    api.pending_polls = 0
    assert main(["submissions", "shapes", "--runs", str(run.parent)], connect=lambda: api) == 0
    assert client.get_run(run_id).data.tags[share.PUBLIC_TAG] == "0.95"
    (run / "mlflow.json").write_text(json.dumps({"tracking_uri": store, "run_id": "0123456789abcdef"}))
    assert main(["submit", str(run), "-m", "unknown run", "--poll", "0"], connect=lambda: api) == 0
    assert "warning: could not tag the MLflow run" in capsys.readouterr().out

    (run / "submission.csv").unlink()
    (run / "mlflow.json").unlink()
    assert runs_main(["push", str(run), "--mlflow", store]) == 0
    other = capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]
    helpers.assert_refused(capsys, lambda argv: main(argv, connect=lambda: api),
                           ["submit", f"mlflow:{other}", "-m", "x", "--mlflow", store], tmp_path / "experiments",
                           f"python -m src.predict --run mlflow:{other} --output-dir DIR")
