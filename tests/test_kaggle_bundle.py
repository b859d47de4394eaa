"""The offline bundle of a code competition, end to end on the exported digits: inspect -> train from train.yaml
-> bundle -> the bundle's notebook, executed with nbclient in a kernel that cannot import the checkout, installs
the bundle's own wheels with --no-index into a fresh folder put first on the path and writes the submission
`src.predict` writes for the same run."""

import importlib.metadata as metadata
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from nbclient import NotebookClient

from src.kaggle.cli import main as kaggle_main
from src.kaggle.offline import predict_bundle
from src.loaddata import load_digits
from src.predict import main as predict_main
from src.tools import export_digits
from src.tracking import rundir
from src.train import main as train_main
from tests.helpers import TINY

LACKING = ("pretrainedmodels", "munch", "tyro")  # what the test's "image" lacks: resnet18 needs the first two
FP16_TOLERANCE = 5e-3  # README "From Kaggle and back": the largest probability change of an fp16 bundle


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    """The exported digits competition, inspected, a tiny 2-fold run trained from its train.yaml, a wheelhouse."""
    tmp = tmp_path_factory.mktemp("kaggle")
    data = tmp / "data"
    digits = load_digits()
    export_digits.write_competition(digits.source.images.images, [digits.classes[t] for t in digits.targets], data, 0.1)
    assert kaggle_main(["inspect", str(data), "--competition", "digits"]) == 0
    flags = [*TINY, "--fold", "all", "--folds", "2", "--epochs", "1", "--arch", "resnet18", "--no-pictures"]
    assert train_main(["--config", str(data / "train.yaml"), *flags, "--output-dir", str(tmp), "--run-name", "r"]) == 0
    wheelhouse = tmp / "wheelhouse"
    pins = [f"{name}=={metadata.version(name)}" for name in LACKING]
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheelhouse), *pins]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"building the bundle's wheels needs the package registry, unreachable here: {done.stderr[-200:]}")
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    image = tmp / "freeze.txt"
    image.write_text("\n".join(line for line in freeze.splitlines() if not line.lower().startswith(LACKING)))
    return {"tmp": tmp, "data": data, "run": tmp / "r", "wheelhouse": wheelhouse, "image": image}


def _bundle(competition, name: str, *flags: str) -> Path:
    out = competition["tmp"] / name
    args = ["bundle", str(competition["run"]), "--out", str(out), "--image-has", str(competition["image"])]
    assert kaggle_main([*args, "--wheels-from", str(competition["wheelhouse"]), *flags]) == 0
    return out


def _reference(competition) -> Path:
    out = competition["tmp"] / "reference"
    if not (out / rundir.SUBMISSION).is_file():
        assert predict_main(["--run", str(competition["run"]), "--output-dir", str(out), "--device", "cpu"]) == 0
    return out


def _probabilities(path: Path) -> np.ndarray:
    frame = pd.read_csv(path).sort_values("id")
    return frame.drop(columns=["id"]).to_numpy(dtype=np.float64)


@pytest.mark.slow  # pip-installs the bundle offline in a notebook (~45 s)
def test_the_notebook_installs_the_bundle_offline_and_reproduces_predict(competition, tmp_path):
    out = _bundle(competition, "bundle")
    manifest = json.loads((out / "bundle.json").read_text())
    wheels = {name.split("-")[0].lower() for name in manifest["wheels"]}
    assert wheels == {"kaggle_ignite_trainer", "pretrainedmodels", "munch", "tyro"}
    assert sorted(p.parent.name for p in (out / "models").rglob("*.pt")) == ["fold0", "fold1"]
    kernel = json.loads((out / "kernel-metadata.json").read_text())
    assert kernel["enable_internet"] is False and kernel["competition_sources"] == ["digits"]
    assert kernel["dataset_sources"] == [manifest["dataset"]] and kernel["code_file"] == "inference.ipynb"

    notebook = nbformat.read(out / "inference.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells)
    settings = notebook.cells[1]
    assert 'COMPETITION_DIR = "/kaggle/input/digits"' in settings.source
    target, work = tmp_path / "target", tmp_path / "work"
    work.mkdir()
    settings.source += (
        f"\nCOMPETITION_DIR = {str(competition['data'])!r}\nBUNDLE_DIR = {str(out)!r}\nTARGET = {str(target)!r}"
        f"\nDEVICE = 'cpu'\n"
    )
    notebook.cells.append(nbformat.v4.new_code_cell("import munch, pretrainedmodels, tyro\n"
                                                    "print([m.__file__ for m in (munch, pretrainedmodels, tyro)])"))
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert f"the trainer imported from {target}" in text  # the bundle's wheel, not the checkout
    assert text.count(str(target)) >= 4  # munch, pretrainedmodels and tyro came from the bundle too

    reference = _reference(competition)
    ours, theirs = (pd.read_csv(p / rundir.SUBMISSION, dtype=str) for p in (work, reference))
    pd.testing.assert_frame_equal(ours, theirs)
    ours_p = _probabilities(work / "bundle_predictions" / "r" / rundir.TEST_PREDICTIONS)
    np.testing.assert_allclose(ours_p, _probabilities(reference / rundir.TEST_PREDICTIONS), atol=1e-5)


def test_an_fp16_bundle_predicts_within_the_documented_tolerance(competition, tmp_path):
    out = _bundle(competition, "bundle-half", "--half")
    full = sum(p.stat().st_size for p in (competition["run"]).glob("fold*/best_model_*.pt"))
    half = sum(p.stat().st_size for p in (out / "models").rglob("*.pt"))
    assert half < 0.6 * full
    predict_bundle(out, competition["data"], tmp_path / "submission.csv", device="cpu")
    reference = _reference(competition)
    ours = _probabilities(tmp_path / "bundle_predictions" / "r" / rundir.TEST_PREDICTIONS)
    difference = np.abs(ours - _probabilities(reference / rundir.TEST_PREDICTIONS)).max()
    print(f"fp16 bundle: largest probability difference {difference:.2e}")
    assert 0 < difference <= FP16_TOLERANCE


def test_a_run_without_a_competition_test_set_is_refused_in_one_line(competition, tmp_path, capsys):
    config = yaml.safe_load((competition["run"] / "config.yaml").read_text())
    config["competition"] = {"competition": "digits"}  # a run trained with flags, not from train.yaml
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.yaml").write_text(yaml.safe_dump(config))
    assert kaggle_main(["bundle", str(tmp_path / "plain"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--data-root and --test-csv" in err and "src.kaggle inspect" in err and "\n" not in err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_an_ensemble_bundle_blends_its_members_with_the_ensembles_weights(competition, tmp_path):
    from src.ensemble import main as ensemble_main

    tmp, data = competition["tmp"], competition["data"]
    flags = [*TINY, "--fold", "all", "--folds", "2", "--epochs", "1", "--arch", "resnet18", "--no-pictures"]
    flags += ["--seed", "7", "--split-seed", "42", "--output-dir", str(tmp), "--run-name", "r2"]
    assert train_main(["--config", str(data / "train.yaml"), *flags]) == 0
    for run in ("r", "r2"):
        assert predict_main(["--run", str(tmp / run), "--device", "cpu"]) == 0
    blend = tmp_path / "blend"
    sample = str(data / "sample_submission.csv")
    assert ensemble_main([str(tmp / "r"), str(tmp / "r2"), "--weights", "0.7,0.3", "--method", "geometric",
                          "--output-dir", str(blend), "--sample-submission", sample]) == 0
    out = tmp_path / "bundle"
    args = ["bundle", str(blend), "--out", str(out), "--image-has", str(competition["image"])]
    assert kaggle_main([*args, "--wheels-from", str(competition["wheelhouse"])]) == 0
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["models"] == ["r", "r2"] and manifest["weights"] == [0.7, 0.3] and manifest["method"] == "geometric"
    predict_bundle(out, data, tmp_path / "work" / "submission.csv", device="cpu")
    ours, theirs = (pd.read_csv(p / rundir.SUBMISSION, dtype=str) for p in (tmp_path / "work", blend))
    pd.testing.assert_frame_equal(ours, theirs)
    blended = tmp_path / "work" / "bundle_predictions" / "blend" / rundir.TEST_PREDICTIONS
    np.testing.assert_allclose(_probabilities(blended), _probabilities(blend / rundir.TEST_PREDICTIONS), atol=1e-5)
