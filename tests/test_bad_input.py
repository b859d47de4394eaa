"""The catalogue of mistakes a real user makes: each one is answered with one line ``error: ...`` naming the file,
row, key or value and what was expected, exit code 2, no traceback, and nothing written before is damaged.
README's troubleshooting table lists the same cases.

Each case is ``(name, entry point, arguments, text the line must hold)``; arguments may hold ``{tmp}`` and the
files `_inputs` writes there: good and bad CSVs, images and config files, and a finished tiny run.
"""

import errno

import pandas as pd
import pytest
import torch
import yaml

from src.ensemble import main as ensemble_main
from src.predict import main as predict_main
from src.tools.export_digits import write_competition
from src.train import main as train_main
from tests.helpers import TINY, assert_refused, class_images

MAINS = {"train": train_main, "predict": predict_main, "ensemble": ensemble_main}
DATA = ["--train-csv", "{tmp}/train.csv", "--image-dir", "{tmp}/train"]

CASES = [
    # the command line and config files
    ("unknown flag", "train", ["--lrr", "0.1"], "Unrecognized options: --lrr, 0.1; did you mean --lr?"),
    ("wrong type", "train", ["--lr", "abc"], "Error parsing --lr: could not convert string to float: 'abc'"),
    ("missing value", "train", ["--fold"], "Missing value for argument '--fold'"),
    ("unknown scheduler", "train", ["--scheduler", "cosin"], "invalid choice 'cosin' for argument '--scheduler'"),
    ("negative lr", "train", ["--lr", "-1"], "--lr -1.0: expected"),
    ("accumulation 0", "train", ["--accumulation-steps", "0"], "--accumulation-steps 0: expected"),
    ("batch size 0", "train", ["--batch-size", "0"], "--batch-size 0: expected"),
    ("batch size auto on CPU", "train", ["--batch-size", "auto"], "--batch-size auto: finds the largest batch that"),
    ("effective batch 0", "train", ["--effective-batch-size", "0"], "--effective-batch-size 0: expected"),
    ("label smoothing 1.5", "train", ["--label-smoothing", "1.5"], "--label-smoothing 1.5: expected"),
    ("negative mixup", "train", ["--mixup-alpha", "-1"], "--mixup-alpha -1.0: expected"),
    ("manifold without mixup", "train", ["--mixup-at", "features"], "--mixup-at 'features': expected 'input' unless"),
    (
        "manifold compiled",
        "train",
        [*TINY, "--mixup-alpha", "0.4", "--mixup-at", "features", "--compile", "--output-dir", "{tmp}"],
        "--mixup-at features arms a hook per iteration",
    ),
    ("val-every 1.5", "train", ["--val-every", "1.5"], "--val-every 1.5: expected"),
    ("unknown metric", "train", ["--metric", "acc"], "--metric 'acc': unknown metric"),
    ("unknown arch", "train", ["--arch", "effnet-b9"], "unknown arch 'effnet-b9'"),
    ("unknown aug preset", "train", ["--aug", "strong"], "unknown augmentation preset 'strong'"),
    ("missing aug file", "train", ["--aug", "{tmp}/aug.yaml"], "--aug {tmp}/aug.yaml: no such augmentation file"),
    ("time limit text", "train", ["--time-limit", "soon"], "--time-limit 'soon': expected a wall time"),
    ("checkpoint every 0", "train", ["--checkpoint-every", "0"], "--checkpoint-every '0': expected"),
    ("missing config", "train", ["--config", "{tmp}/nope.yaml"], "{tmp}/nope.yaml"),
    (
        "config typo",
        "train",
        ["--config", "{tmp}/typo.yaml"],
        "unknown config key 'mixup_alfa'; did you mean 'mixup_alpha'",
    ),
    ("config not YAML", "train", ["--config", "{tmp}/broken.yaml"], "{tmp}/broken.yaml: not valid YAML at line"),
    ("fold >= folds", "train", [*DATA, "--folds", "3", "--fold", "3"], "--fold 3"),
    # data
    ("missing CSV", "train", ["--train-csv", "{tmp}/none.csv", "--image-dir", "{tmp}/train"], "{tmp}/none.csv"),
    ("empty CSV", "train", ["--train-csv", "{tmp}/empty.csv", "--image-dir", "{tmp}/train"], "{tmp}/empty.csv"),
    ("missing label column", "train", [*DATA, "--label-col", "diagnosis"], "diagnosis"),
    ("missing id column", "train", [*DATA, "--id-col", "image_id"], "image_id"),
    ("missing image", "train", ["--train-csv", "{tmp}/lost.csv", "--image-dir", "{tmp}/train"], "lost_image"),
    ("undecodable image", "train", ["--train-csv", "{tmp}/junk.csv", "--image-dir", "{tmp}/train"], "junk"),
    ("in_chans of other images", "train", [*DATA, "--in-chans", "3"], "--in-chans 3: the images have 1 channels"),
    ("too few classes", "train", [*DATA, "--num-classes", "2"], "--num-classes 2: the data has 3 classes"),
    # runs, checkpoints and weights
    ("missing resume", "train", ["--resume", "{tmp}/gone"], "--resume {tmp}/gone"),
    ("missing pretrained", "train", [*DATA, "--pretrained", "{tmp}/w.pt"], "pretrained weights file not found"),
    ("pretrained not weights", "train", [*DATA, "--pretrained", "{tmp}/pickle.pt"], "weights_only=True"),
    (
        "pretrained other arch",
        "train",
        [*DATA, "--pretrained", "{tmp}/other.pt"],
        "'_conv_stem.weight' is (16, 3, 3, 3) in the file and (32, 3, 3, 3) in the model",
    ),
    ("unwritable output", "train", [*DATA, *TINY, "--output-dir", "{tmp}/train.csv"], "{tmp}/train.csv"),
    (
        "run, other settings",
        "train",
        [*DATA, *TINY, "--output-dir", "{tmp}", "--run-name", "run", "--lr", "0.1"],
        "holds a run with other settings (folds: 2 there, 5 here; fold: 'all' there, 0 here",
    ),
    ("run without checkpoints", "predict", ["--run", "{tmp}/bare", "--test-csv", "{tmp}/test.csv"], "no best_model_"),
    (
        "ids not in the sample",
        "predict",
        [
            "--run",
            "{tmp}/run",
            "--test-csv",
            "{tmp}/test.csv",
            "--image-dir",
            "{tmp}/test",
            "--sample-submission",
            "{tmp}/short_sample.csv",
            "--output-dir",
            "{tmp}/out",
        ],
        "predicted ids are not in the sample",
    ),
    ("ensemble of other classes", "ensemble", ["{tmp}/run", "{tmp}/other_classes"], "class list differs"),
]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    """The files the cases name, and a finished 1-epoch run ``run`` on ``train.csv`` (3 classes, grey PNGs)."""
    root = tmp_path_factory.mktemp("bad")
    images, labels = class_images(40, 3)
    write_competition(images, [f"c{v}" for v in labels], root, test_fraction=0.25)
    train = pd.read_csv(root / "train.csv")
    (root / "empty.csv").write_text("")
    pd.concat([train, pd.DataFrame({"id": ["lost_image"], "label": ["c0"]})]).to_csv(root / "lost.csv", index=False)
    (root / "train" / "junk.png").write_bytes(b"not an image")
    pd.concat([train, pd.DataFrame({"id": ["junk"], "label": ["c0"]})]).to_csv(root / "junk.csv", index=False)
    (root / "typo.yaml").write_text(yaml.safe_dump({"mixup_alfa": 0.1}))
    (root / "broken.yaml").write_text("lr: [0.1\n")
    torch.save({"not": pd.Timestamp("2026-01-01")}, root / "pickle.pt")  # a pickled object, not weights
    torch.save({"_conv_stem.weight": torch.zeros(16, 3, 3, 3)}, root / "other.pt")  # another stem
    sample = pd.read_csv(root / "sample_submission.csv").iloc[1:]
    sample.to_csv(root / "short_sample.csv", index=False)
    flags = ["--train-csv", str(root / "train.csv"), "--image-dir", str(root / "train"), *TINY]
    assert (
        train_main(
            [*flags, "--folds", "2", "--fold", "all", "--epochs", "1", "--output-dir", str(root)]
            + ["--run-name", "run"]
        )
        == 0
    )
    (root / "bare").mkdir()
    for name in ("config.yaml", "classes.json"):
        (root / "bare" / name).write_bytes((root / "run" / "fold0" / name).read_bytes())
    other = root / "other_classes"
    (other / "fold0").mkdir(parents=True)
    classes = (root / "run" / "fold0" / "classes.json").read_text().replace('"c2"', '"c9"')
    (other / "fold0" / "classes.json").write_text(classes)
    (other / "fold0" / "config.yaml").write_bytes((root / "run" / "fold0" / "config.yaml").read_bytes())
    (other / "oof.csv").write_text((root / "run" / "oof.csv").read_text().replace("p_c2", "p_c9"))
    return root


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "out" not in p.parts}


@pytest.mark.parametrize("name, entry, args, expected", CASES, ids=[c[0] for c in CASES])
def test_a_mistake_gets_one_line_and_exit_code_2_and_changes_no_file(tmp, capsys, name, entry, args, expected):
    """The refusal contract (`tests.helpers.assert_refused`): the whole folder of the cases' files and runs is
    byte-identical afterwards: no file changed, added or removed, no folder made."""
    argv = [a.replace("{tmp}", str(tmp)) for a in args]
    assert_refused(capsys, MAINS[entry], argv, tmp, expected.replace("{tmp}", str(tmp)))


def test_the_catalogue_holds_at_least_30_mistakes():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_out_of_gpu_memory_suggests_a_smaller_batch(tmp, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("src.training.trainer.create_trainer", no_memory)
    assert train_main([a.replace("{tmp}", str(tmp)) for a in DATA] + [*TINY, "--dry-run"]) == 2
    assert "error: out of GPU memory: lower --batch-size (--accumulation-steps N" in capsys.readouterr().err


def test_a_full_disk_is_named_and_the_previous_checkpoint_kept(tmp, capsys, monkeypatch):
    flags = [*(a.replace("{tmp}", str(tmp)) for a in DATA), *TINY, "--output-dir", str(tmp), "--run-name", "disk"]
    assert train_main([*flags, "--epochs", "1"]) == 0
    before = _snapshot(tmp / "disk")
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    assert train_main([*flags, "--epochs", "2"]) == 2
    monkeypatch.setattr(torch, "save", real_save)
    assert "No space left on device" in capsys.readouterr().err
    after = _snapshot(tmp / "disk")
    saved = {path: data for path, data in before.items() if path.suffix == ".pt"}
    assert saved and all(after.get(path) == data for path, data in saved.items())  # every checkpoint as it was
