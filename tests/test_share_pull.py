"""``mlflow:<run-id>`` wherever the other commands take a run folder (issue 31, item 2): src.soup, src.kaggle
bundle and submit, --teacher and --pseudo-labels. A local store (a folder: SQLite and local artifacts), no server."""

import numpy as np
import pandas as pd
import pytest
import torch

from src.config import Config
from src.data import distill
from src.inference.oof import predictions_frame
from src.kaggle.cli import main as kaggle_main
from src.runs import main as runs_main
from src.soup import main as soup_main
from src.tools.export_digits import write_image_folder
from src.tracking import rundir
from src.train import main as train_main
from src.training.assembly import setup_data, setup_loaders
from tests import helpers
from tests.helpers import CPU, TINY, assert_refused

pytest.importorskip("mlflow")

FLAGS = [*TINY, "--data-fraction", "0.01", "--arch", "resnet18", "--epochs", "2", "--n-saved", "2", "--no-pictures",
         "--no-notes"]
UNKNOWN = "mlflow:0123456789abcdef"


def _push(folder, store, capsys, *flags) -> str:
    assert runs_main(["push", str(folder), "--mlflow", store, *flags]) == 0
    return capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A tiny trained run (two best checkpoints) pushed with them to a local store: (run folder, store, run id)."""
    out = tmp_path_factory.mktemp("pull")
    assert train_main([*FLAGS, "--output-dir", str(out), "--run-name", "a"]) == 0
    store = str(out / "mlruns")
    with pytest.MonkeyPatch.context() as patch:  # mlflow.set_tracking_uri sets MLFLOW_TRACKING_URI in this process
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        runs_main(["push", str(out / "a"), "--mlflow", store, "--with-checkpoints"])
    (run_id,) = {p.parent.parent.name for p in (out / "mlruns").glob("**/artifacts/share")}
    return out / "a", store, run_id


@pytest.fixture
def store(shared, tmp_path, monkeypatch):
    """The store, and the download cache under tmp_path; no MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return shared[1]


def _weights(folder):
    return torch.load(rundir.best_checkpoint(folder), weights_only=True)


def test_a_soup_of_a_shared_run_is_the_soup_of_its_folder(shared, store, tmp_path, capsys):
    trained, _, run_id = shared
    assert soup_main([str(trained), "--k", "2", "--output", str(tmp_path / "local")]) == 0
    pulled = f"mlflow:{run_id}"
    assert soup_main([pulled, "--k", "2", "--mlflow", store, "--output", str(tmp_path / "pulled")]) == 0
    local, shared = _weights(tmp_path / "local"), _weights(tmp_path / "pulled")
    assert local.keys() == shared.keys() and all(torch.allclose(local[k], shared[k]) for k in local)
    assert rundir.best_checkpoint(tmp_path / "local").name == rundir.best_checkpoint(tmp_path / "pulled").name
    frames = [pd.read_csv(tmp_path / name / rundir.PREDICTIONS) for name in ("local", "pulled")]
    pd.testing.assert_frame_equal(*frames)
    cached = tmp_path / "cache" / "kaggle-trainer" / "mlflow" / run_id
    assert_refused(capsys, soup_main, [pulled, "--mlflow", store], cached, "pass --output")  # not <cache>-soup
    assert not (cached.parent / f"{run_id}-soup").exists()
    assert_refused(capsys, soup_main, [pulled, "--mlflow", store, "--output", str(cached / "soup")], cached,
                   "one of the runs souped")
    assert_refused(capsys, soup_main, [UNKNOWN, "--mlflow", store, "--output", str(tmp_path / "x")], cached,
                   "not found")
    submit = ["submit", pulled, "-m", "try", "--mlflow", store]  # found, but never recorded into the cache
    assert_refused(capsys, kaggle_main, submit, cached, "python -m src.predict --run")


def _student(tmp_path):
    csv, folder = helpers.image_folder(tmp_path, n=24, num_classes=3)
    flags = dict(train_csv=str(csv), image_dir=str(folder), batch_size=4, train_eval_size=4, img_size=16)
    data, fold_of = setup_data(Config.of(**flags))
    return flags, data, fold_of


def test_a_shared_teacher_gives_the_targets_of_its_folder_and_pseudo_labels_its_test_predictions(
    store, tmp_path, capsys, monkeypatch
):
    flags, data, fold_of = _student(tmp_path)
    probs = np.eye(3)[(data.targets + 1) % 3] * 0.8 + 0.2 / 3
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    predictions_frame(data.source.ids(), probs, data.task, fold_of).to_csv(teacher / rundir.OOF, index=False)
    test_ids = [f"t{i}" for i in range(6)]
    test_csv = write_image_folder(helpers.class_images(6, 3, seed=1)[0], None, tmp_path, name="test", ids=test_ids)
    test_probs = np.eye(3)[[0, 1, 2, 0, 1, 2]] * np.array([[0.9], [0.4], [0.9], [0.9], [0.4], [0.9]]) + 0.02
    predictions_frame(test_ids, test_probs, data.task).to_csv(teacher / rundir.TEST_PREDICTIONS, index=False)
    rundir.write_config(teacher, Config.of(**flags))
    run_id = _push(teacher, store, capsys)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    targets = []
    for spec, track in [(str(teacher), {}), (f"mlflow:{run_id}", {"mlflow": store})]:
        config = Config.of(**flags, **track, teacher=spec, teacher_weight=0.75)
        targets.append(setup_loaders(config, data, fold_of, CPU).train.dataset.targets)
    assert np.array_equal(*targets)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # the environment's store, as the config's --mlflow unset
    config = Config.of(**flags, teacher=f"mlflow:{run_id}", teacher_weight=0.75)
    assert np.array_equal(setup_loaders(config, data, fold_of, CPU).train.dataset.targets, targets[0])
    with pytest.raises(FileNotFoundError, match="not found"):
        distill.teacher_file(UNKNOWN, rundir.OOF)

    pseudo = dict(pseudo_test_csv=str(test_csv), pseudo_image_dir=str(tmp_path / "test"), pseudo_threshold=0.5)
    trains = []
    for spec in (str(teacher / rundir.TEST_PREDICTIONS), f"mlflow:{run_id}"):
        trains.append(setup_loaders(Config.of(**flags, **pseudo, pseudo_labels=spec), data, fold_of, CPU).train)
    local, pulled = (train.dataset for train in trains)
    assert len(pulled) == len(local) == int((fold_of != 0).sum()) + 4  # the 4 confident test images
    assert np.array_equal(pulled.targets, local.targets)


def test_unknown_shared_runs_are_refused_in_one_line_by_each_command(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    out = tmp_path / "out"
    out.mkdir()
    for argv in (["bundle", UNKNOWN, "--out", str(out / "b")], ["submit", UNKNOWN, "-m", "try"]):
        assert_refused(capsys, kaggle_main, argv, out, "not found")
    assert_refused(capsys, kaggle_main, ["bundle", UNKNOWN, "--mlflow", store, "--out", str(out / "b")], out,
                   "not found")
    common = [*FLAGS, "--output-dir", str(out), "--run-name", "s"]
    assert_refused(capsys, train_main, [*common, "--teacher", UNKNOWN], out, "not found")
    pseudo = ["--pseudo-labels", UNKNOWN, "--pseudo-test-csv", str(tmp_path / "test.csv")]
    assert_refused(capsys, train_main, [*common, *pseudo], out, "not found")


def test_folds_from_a_shared_run_are_the_folds_of_its_folder(shared, store):
    folder, _, run_id = shared
    data, fold_of = setup_data(Config.of(folds_from=f"mlflow:{run_id}", mlflow=store))
    theirs = pd.read_csv(folder / rundir.FOLDS, dtype={"id": str})
    assert dict(zip(data.source.ids(), fold_of.tolist())) == dict(zip(theirs["id"], theirs["fold"].tolist()))
