"""Issue 31's scenario end to end, on a local store (SQLite and a local artifact folder; the same with a real
``mlflow server``: tests/test_cli_mlflow.py, slow). User A trains two folds, predicts the test set and pushes; user
B, with another cache and user name, trains on A's folds (``--folds-from mlflow:<A>``) and blends ``mlflow:<A>``
with B's own run: the same OOF score, OOF file and submission as blending the two folders. A run on other folds is
refused by name; a damaged download is fetched again by the next command; an unknown run or a dead server is one
line, exit 2."""

import json

import pytest

from src.ensemble import main as ensemble_main
from src.predict import main as predict_main
from src.runs import main as runs_main
from src.tools.export_digits import write_competition
from src.train import main as train_main
from tests.helpers import assert_refused, class_images

pytest.importorskip("mlflow")

FLAGS = ["--fold", "all", "--folds", "2", "--epochs", "1", "--arch", "resnet18", "--img-size", "16",
         "--batch-size", "16", "--train-eval-size", "16", "--no-progress", "--no-notes", "--no-pictures"]


def _as_user(monkeypatch, tmp_path, name: str) -> None:
    """Another user: its own name and download cache; no tracking URI in the environment."""
    monkeypatch.setenv("USER", name)
    monkeypatch.setenv("LOGNAME", name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache-{name}"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _train_and_predict(comp, out, name, *flags) -> None:
    data = ["--train-csv", str(comp / "train.csv"), "--image-dir", str(comp / "train")]
    assert train_main([*data, *FLAGS, *flags, "--output-dir", str(out), "--run-name", name]) == 0
    test = ["--test-csv", str(comp / "sample_submission.csv"), "--image-dir", str(comp / "test")]
    assert predict_main(["--run", str(out / name), *test, "--device", "cpu"]) == 0


def test_two_users_blend_through_the_store_as_through_their_folders(tmp_path, monkeypatch, capsys):
    images, labels = class_images(120, 3, seed=4)
    comp = write_competition(images, [str(label) for label in labels], tmp_path / "comp", test_fraction=0.2)
    store = str(tmp_path / "mlruns")

    _as_user(monkeypatch, tmp_path, "ana")
    _train_and_predict(comp, tmp_path / "ana", "A")
    assert runs_main(["push", str(tmp_path / "ana" / "A"), "--mlflow", store]) == 0
    shared = "mlflow:" + capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]

    _as_user(monkeypatch, tmp_path, "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # B's commands find the team's store here
    _train_and_predict(comp, tmp_path / "bob", "B", "--folds-from", shared, "--seed", "7")
    ours, theirs = (tmp_path / "bob" / "B" / "fold0" / "folds.csv"), (tmp_path / "ana" / "A" / "fold0" / "folds.csv")
    assert ours.read_bytes() == theirs.read_bytes()
    local, pulled = tmp_path / "local", tmp_path / "pulled"
    assert ensemble_main([str(tmp_path / "ana" / "A"), str(tmp_path / "bob" / "B"), "--output-dir", str(local)]) == 0
    assert ensemble_main([shared, str(tmp_path / "bob" / "B"), "--output-dir", str(pulled)]) == 0
    for name in ("oof.csv", "submission.csv", "test_predictions.csv"):
        assert (pulled / name).read_bytes() == (local / name).read_bytes(), name
    scores = [json.loads((folder / "ensemble.json").read_text()) for folder in (local, pulled)]
    assert scores[0]["oof_blend"] == scores[1]["oof_blend"] and scores[0]["weights"] == scores[1]["weights"]

    # a damaged download (an interrupted pull, a full disk) is fetched again by the next command
    (cached,) = (tmp_path / "cache-bob").rglob("oof.csv")
    cached.write_text("id,fold\n")
    assert ensemble_main([shared, str(tmp_path / "bob" / "B"), "--output-dir", str(pulled)]) == 0
    assert (pulled / "oof.csv").read_bytes() == (local / "oof.csv").read_bytes()
    capsys.readouterr()

    # a run on other folds is refused by name; an unknown run and a dead server are one line
    _train_and_predict(comp, tmp_path / "bob", "C", "--split-seed", "3")
    blend = [shared, str(tmp_path / "bob" / "C"), "--output-dir", str(tmp_path / "refused")]
    assert_refused(capsys, ensemble_main, blend, tmp_path / "bob", f"{tmp_path / 'bob' / 'C'}: its folds differ")
    unknown = ["mlflow:0123456789abcdef0123456789abcdef", str(tmp_path / "bob" / "B"), "--output-dir", str(local)]
    assert_refused(capsys, ensemble_main, unknown, tmp_path / "bob", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-new"))  # not downloaded yet: the server is asked,
    # in seconds (src.tracking.mlflow_log.HTTP_DEFAULTS), not MLflow's minutes of retries
    dead = [shared, str(tmp_path / "bob" / "B"), "--output-dir", str(local), "--mlflow", "http://127.0.0.1:9"]
    assert_refused(capsys, ensemble_main, dead, tmp_path / "bob", "--mlflow http://127.0.0.1:9: cannot use")
