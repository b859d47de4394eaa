"""The output side of the refusal contract (`tests.helpers.assert_refused`): predict, ensemble, soup, runs and the
Kaggle subcommands check everything they can before their first write, and replace earlier outputs only when the
whole command succeeds. Each refused case exits 2 with one ``error:`` line and leaves the folder that holds the
runs, the data and the earlier outputs byte-identical; README's troubleshooting table lists the same cases.

Each case is ``(name, entry point, arguments, text the line must hold)``; arguments may hold ``{root}``, the
folder `root` writes: the competition in ``data/``, a finished ``--fold all --folds 2`` run ``run`` with its
test predictions and submission, a second run ``run2``, their blend ``blend/``, and damaged copies of them.
"""

import errno
import functools
import shutil

import pandas as pd
import pytest
import torch

from src.ensemble import main as ensemble_main
from src.kaggle.cli import main as kaggle_main
from src.predict import main as predict_main
from src.runs import main as runs_main
from src.soup import main as soup_main
from src.tools.export_digits import write_competition
from src.tracking import rundir
from src.train import main as train_main
from tests.helpers import TINY, assert_refused, class_images, fingerprint, fingerprint_changes
from tests.kaggle_stand_in import StandInKaggleApi

RUN = "{root}/run"
TEST = ["--test-csv", "{root}/data/test.csv", "--image-dir", "{root}/data/test"]
CASES = [
    # src.predict: the run's earlier test_predictions.csv and submission.csv stay as they were
    ("predict without --run", "predict", [], "--run"),
    (
        "predict, an id of the sample not predicted",
        "predict",
        ["--run", RUN, *TEST, "--sample-submission", "{root}/extra_sample.csv"],
        "1 ids of the sample are not predicted (e.g. ['zz_not_in_test'])",
    ),
    (
        "predict, a test id listed twice",
        "predict",
        ["--run", RUN, "--test-csv", "{root}/twice.csv", "--image-dir", "{root}/data/test"],
        "{root}/twice.csv: ids listed more than once: ['{first_test_id}']",
    ),
    (
        "predict, a truncated best_model",
        "predict",
        ["--run", "{root}/cut"],
        "{root}/cut/fold1/best_model_",
    ),
    (
        "predict, NaN probabilities",
        "predict",
        ["--run", "{root}/nan"],
        "probabilities are NaN or infinite for ids ['{first_test_id}'",
    ),
    (
        "predict --oof, a sample of other ids",
        "predict",
        ["--run", RUN, "--oof", *TEST, "--sample-submission", "{root}/extra_sample.csv"],
        "ids of the sample are not predicted",
    ),
    ("predict, unknown --tta", "predict", ["--run", RUN, "--tta", "d8"], "--tta 'd8': unknown"),
    # src.ensemble: the blend folder's files stay as they were
    ("ensemble without runs", "ensemble", [], "give at least two run folders to blend"),
    (
        "ensemble, a sample of other ids",
        "ensemble",
        [RUN, "{root}/run2", "--output-dir", "{root}/blend", "--sample-submission", "{root}/extra_sample.csv"],
        "1 ids of the sample are not predicted (e.g. ['zz_not_in_test'])",
    ),
    (
        "ensemble, a test id listed twice",
        "ensemble",
        [RUN, "{root}/twice_run", "--output-dir", "{root}/blend"],
        "{root}/twice_run/test_predictions.csv: ids listed more than once: ['{first_test_id}']",
    ),
    (
        "ensemble, an empty probability",
        "ensemble",
        [RUN, "{root}/nan_run", "--output-dir", "{root}/blend"],
        "{root}/nan_run/test_predictions.csv: probabilities are NaN or infinite for ids ['{first_test_id}']",
    ),
    ("ensemble, weights not numbers", "ensemble", [RUN, "{root}/run2", "--weights", "1,x"], "--weights '1,x'"),
    # src.soup: no soup folder is made
    ("soup without runs", "soup", [], "give one or more run folders to soup"),
    ("soup, a truncated best_model", "soup", ["{root}/cut", "--k", "1"], "{root}/cut/fold1/best_model_"),
    ("soup into a file", "soup", [RUN, "--output", "{root}/data/train.csv"], "--output {root}/data/train.csv"),
    # src.runs writes nothing; its mistakes are one line
    ("runs, a damaged config.yaml", "runs", ["{root}/damaged_runs"], "{root}/damaged_runs/cut_config/config.yaml"),
    ("runs, --diff of a missing run", "runs", ["{root}", "--diff", "run", "gone"], "--diff gone: no run folder"),
    ("runs, unknown --sort", "runs", ["{root}", "--sort", "acc"], "--sort 'acc': no such column"),
    # src.kaggle: no bundle, record, download folder or train.yaml is written
    ("kaggle, a misspelt subcommand", "kaggle", ["inspct", "{root}/data"], "did you mean inspect?"),
    ("kaggle bundle without a folder", "kaggle", ["bundle"], "bundle"),
    (
        "kaggle bundle, a truncated best_model",
        "kaggle",
        ["bundle", "{root}/cut", "--out", "{root}/bundle"],
        "{root}/cut/fold1/best_model_",
    ),
    (
        "kaggle submit, an id listed twice",
        "kaggle",
        ["submit", "{root}/twice_submission", "-m", "twice"],
        "ids listed more than once: ['{first_test_id}']",
    ),
    ("kaggle submit without a message", "kaggle", ["submit", RUN], "Missing from python -m src.kaggle submit: -m STR"),
    ("kaggle submit, a blank message", "kaggle", ["submit", RUN, "-m", " "], "-m: give the submission a message"),
    ("kaggle download, unknown competition", "kaggle", ["download", "nope", "--out", "{root}/dl"], "(404)"),
    ("kaggle inspect, no table", "kaggle", ["inspect", "{root}/data/test"], "no training table"),
]


def _api(root):
    return StandInKaggleApi("shapes", root / "data")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The competition (inspected into ``data/train.yaml``), a finished 1-epoch ``--fold all --folds 2`` run ``run``
    trained from it, predicted (``run/test_predictions.csv``, ``run/submission.csv``), a copy ``run2``, their blend
    ``blend/``, and the damaged inputs the cases name."""
    root = tmp_path_factory.mktemp("outputs")
    data = root / "data"
    images, labels = class_images(40, 3)
    write_competition(images, [f"c{v}" for v in labels], data, test_fraction=0.25)
    assert kaggle_main(["inspect", str(data), "--competition", "shapes"]) == 0
    flags = [*TINY, "--folds", "2", "--fold", "all", "--epochs", "1", "--no-pictures", "--no-notes"]
    flags += ["--output-dir", str(root), "--run-name", "run"]
    assert train_main(["--config", str(data / "train.yaml"), *flags]) == 0
    run = root / "run"
    assert predict_main(["--run", str(run)]) == 0
    test = pd.read_csv(data / "test.csv", dtype=str)
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    pd.concat([sample, pd.DataFrame({"id": ["zz_not_in_test"], "label": ["c0"]})]).to_csv(
        root / "extra_sample.csv", index=False
    )
    pd.concat([test, test.iloc[:1]]).to_csv(root / "twice.csv", index=False)
    _copy_run(run, root / "run2")
    _copy_run(run, root / "cut")
    best = rundir.best_checkpoint(root / "cut" / "fold1")
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    _copy_run(run, root / "nan")
    for fold in ("fold0", "fold1"):
        path = rundir.best_checkpoint(root / "nan" / fold)
        state = torch.load(path, weights_only=True)
        torch.save({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, path)
    for name in ("twice_run", "nan_run"):
        _copy_run(run, root / name, weights=False)
    predictions = pd.read_csv(run / rundir.TEST_PREDICTIONS, dtype={"id": str})
    pd.concat([predictions, predictions.iloc[:1]]).to_csv(root / "twice_run" / rundir.TEST_PREDICTIONS, index=False)
    predictions.assign(p_c0=[None] + predictions["p_c0"].tolist()[1:]).to_csv(
        root / "nan_run" / rundir.TEST_PREDICTIONS, index=False
    )
    (root / "twice_submission").mkdir()
    shutil.copyfile(run / rundir.CONFIG, root / "twice_submission" / rundir.CONFIG)
    submission = pd.read_csv(run / rundir.SUBMISSION, dtype=str)
    pd.concat([submission, submission.iloc[:1]]).to_csv(root / "twice_submission" / rundir.SUBMISSION, index=False)
    damaged = root / "damaged_runs" / "cut_config"
    damaged.mkdir(parents=True)
    text = (run / rundir.CONFIG).read_text()
    (damaged / rundir.CONFIG).write_text(text.replace("lr: ", "lr: [", 1))  # an edit left unfinished
    assert ensemble_main([str(run), str(root / "run2"), "--weights", "equal", "--output-dir", str(root / "blend")]) == 0
    return root


def _copy_run(run, to, weights=True):
    """A copy of a finished run without its training states (and without its weights unless ``weights``)."""
    skip = ["checkpoint_*.pt", "events.out.*"] + ([] if weights else ["*.pt"])
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(*skip))


MAINS = {"predict": predict_main, "ensemble": ensemble_main, "soup": soup_main, "runs": runs_main}


@pytest.mark.parametrize("name, entry, args, expected", CASES, ids=[c[0] for c in CASES])
def test_a_refused_output_command_changes_no_file(root, capsys, name, entry, args, expected):
    first_test_id = pd.read_csv(root / "data" / "test.csv", dtype=str)["id"].iloc[0]

    def filled(text):
        return text.replace("{root}", str(root)).replace("{first_test_id}", first_test_id)

    main = MAINS.get(entry) or functools.partial(kaggle_main, connect=lambda: _api(root))
    assert_refused(capsys, main, [filled(a) for a in args], root, filled(expected))


def test_the_catalogue_holds_at_least_14_cases():
    assert len(CASES) >= 14 and len({c[0] for c in CASES}) == len(CASES)


def test_a_failure_after_prediction_keeps_the_earlier_predictions_and_submission(root, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "run" / rundir.SUBMISSION))

    monkeypatch.setattr("src.predict.write_submission", full_disk)
    before = fingerprint(root)
    assert predict_main(["--run", str(root / "run"), "--tta", "flip"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not fingerprint_changes(before, fingerprint(root))


def test_a_soup_that_fails_at_its_last_step_makes_no_folder(root, capsys, monkeypatch):
    def fails(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "oof.csv")

    monkeypatch.setattr("src.soup.gather_oof", fails)
    before = fingerprint(root)
    assert soup_main([str(root / "run"), "--k", "1", "--device", "cpu"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not fingerprint_changes(before, fingerprint(root))


def test_a_successful_predict_replaces_both_files_and_leaves_no_temporary_file(root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / rundir.SUBMISSION).write_text("stale\n")
    assert predict_main(["--run", str(root / "run"), "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [rundir.SUBMISSION, rundir.TEST_PREDICTIONS]
    assert (out / rundir.SUBMISSION).read_text() == (root / "run" / rundir.SUBMISSION).read_text()


def test_a_failed_bundle_keeps_the_earlier_bundle(root, tmp_path, monkeypatch):
    def fake_wheels(packages, out, wheels_from):
        out.mkdir(parents=True, exist_ok=True)
        (out / "project-0-py3-none-any.whl").write_bytes(b"wheel")
        return [p.name for p in out.glob("*.whl")]

    monkeypatch.setattr("src.kaggle.bundle.build_wheels", fake_wheels)
    out = tmp_path / "bundle"
    assert kaggle_main(["bundle", str(root / "run"), "--out", str(out)]) == 0
    before = fingerprint(out)

    def pip_fails(packages, out, wheels_from):
        out.mkdir(parents=True, exist_ok=True)
        (out / "half-written.whl").write_bytes(b"")
        raise ValueError("pip wheel failed for tyro==1: no matching distribution")

    monkeypatch.setattr("src.kaggle.bundle.build_wheels", pip_fails)
    assert kaggle_main(["bundle", str(root / "run"), "--out", str(out), "--half"]) == 2
    assert not fingerprint_changes(before, fingerprint(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary folder left beside it
