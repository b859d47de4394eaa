"""``python -m src.kaggle inspect`` on every layout the data tests build and `src.tools.export_digits` writes: the
fields it decides are the flags those tests pass by hand, each with its evidence, the undecided named with
their flag; and the train.yaml it writes trains with no other data flag."""

import numpy as np
import pandas as pd
import pytest
import yaml

from src.kaggle.cli import main
from src.kaggle.layout import inspect_folder
from src.tools import export_digits
from src.train import main as train_main
from tests import helpers
from tests.helpers import TINY


def _images(tmp):
    helpers.image_folder(tmp, n=24, num_classes=3)
    return {"layout": "images", "train_csv": "train.csv", "image_dir": "train", "image_template": "{id}.png",
            "id_col": "id", "label_col": ["label"]}


def _pixels(tmp):
    helpers.pixel_csv(tmp, n=24)
    return {"layout": "pixels", "train_csv": "pixels.csv", "label_col": ["label"]}


def _parquet(tmp):
    helpers.parquet_multihead(tmp, n=24)
    heads = ("consonant_diacritic", "grapheme_root", "vowel_diacritic")
    rows = [f"Test_{i}_{head}" for i in range(2) for head in heads]
    pd.DataFrame({"row_id": rows, "target": 0}).to_csv(tmp / "sample_submission.csv", index=False)
    heads = ["grapheme_root", "vowel_diacritic", "consonant_diacritic"]
    return {"layout": "parquet", "train_csv": "train.csv", "parquet": "train_image_data_*.parquet",
            "id_col": "image_id", "label_col": heads, "submission_format": "long"}


def _six_channel(tmp):
    helpers.six_channel(tmp, n=12)
    pd.DataFrame({"id_code": ["t0"], "sirna": ["0"]}).to_csv(tmp / "sample_submission.csv", index=False)
    return {"layout": "images", "train_csv": "train.csv", "image_dir": "images", "label_col": ["sirna"],
            "image_template": helpers.SIX_CHANNEL["image_template"], "channels": ["1", "2", "3", "4", "5", "6"]}


def _strokes(tmp):
    helpers.stroke_csvs(tmp, per_class=10)
    return {"layout": "strokes", "train_csv": "train_simplified/*.csv", "id_col": "key_id", "label_col": ["word"]}


def _multilabel(tmp):
    helpers.planet_multilabel(tmp, n=24)
    pd.DataFrame({"image_name": ["test_0"], "tags": ["clear"]}).to_csv(tmp / "sample_submission_v2.csv", index=False)
    return {"layout": "images", "train_csv": "train_v2.csv", "image_dir": "train-jpg", "image_template": "{id}.jpg",
            "id_col": "image_name", "label_col": ["tags"], "multilabel": True, "submission_format": "tags"}


def _digits_competition(tmp):
    images, labels = helpers.class_images(60, 3)
    export_digits.write_competition(images, [str(v) for v in labels], tmp, 0.1)
    return {"layout": "images", "train_csv": "train.csv", "image_dir": "train", "id_col": "id", "label_col": ["label"],
            "test_csv": "test.csv", "test_image_dir": "test", "sample_submission": "sample_submission.csv",
            "submission_format": "label"}


def _digits_pixels(tmp):
    images, labels = helpers.class_images(30, 3)
    export_digits.write_pixel_csv(images, labels, tmp / "train_pixels.csv")
    return {"layout": "pixels", "train_csv": "train_pixels.csv", "label_col": ["label"]}


LAYOUTS = [_images, _pixels, _parquet, _six_channel, _strokes, _multilabel, _digits_competition, _digits_pixels]
PATHS = ("train_csv", "image_dir", "parquet", "test_csv", "test_image_dir", "sample_submission")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inspect_decides_what_the_layout_tests_pass_by_hand(tmp_path, layout):
    expected = layout(tmp_path)
    finding = inspect_folder(tmp_path)
    decided = {k: v for k, v in finding.fields.items() if k in expected}
    expected = {k: str(tmp_path / v) if k in PATHS else v for k, v in expected.items()}
    assert decided == expected
    for name in finding.fields.keys() - {"data_root"}:  # never silently: each choice comes with its evidence
        assert any(line.startswith(f"--{name.replace('_', '-')} ") for line in finding.evidence), name
    assert any("--competition" in line for line in finding.undecided)


def test_what_cannot_be_decided_is_named_with_its_flag(tmp_path):
    _parquet(tmp_path)  # 12 x 16 pixels: not a square
    finding = inspect_folder(tmp_path)
    assert any(line.endswith("set --height and --width") and "192" in line for line in finding.undecided)
    two = tmp_path / "two"
    two.mkdir()
    pd.DataFrame({"id": ["a", "b"], "kind": ["x", "y"], "colour": ["r", "g"], **{str(i): [0, 0] for i in range(64)}}
                 ).to_csv(two / "train.csv", index=False)
    finding = inspect_folder(two)
    assert finding.fields["layout"] == "pixels"
    assert "the label column among kind, colour; set --label-col" in finding.undecided


def test_the_command_prints_the_evidence_and_the_train_yaml_trains(tmp_path, capsys):
    _multilabel(tmp_path)
    assert main(["inspect", str(tmp_path), "--competition", "planet"]) == 0
    out = capsys.readouterr().out
    assert "--multilabel True: space-separated tags in `tags`" in out
    assert f"python -m src.train --config {tmp_path / 'train.yaml'} --fold all" in out
    written = yaml.safe_load((tmp_path / "train.yaml").read_text())
    assert written["competition"] == "planet" and written["multilabel"] is True
    flags = [*TINY, "--data-fraction", "1", "--epochs", "1", "--arch", "resnet18", "--no-pictures"]
    assert train_main(["--config", str(tmp_path / "train.yaml"), *flags, "--output-dir", str(tmp_path / "r")]) == 0


def test_a_folder_without_a_table_is_one_line(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros(3))
    assert main(["inspect", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {tmp_path}: no training table")


def test_a_rows_files_are_those_that_name_its_id_as_a_whole_word(tmp_path):
    """An id inside another id ('1' in '11', '121', 'x1y') names only its own file."""
    from src.kaggle import templates

    names = ["1", "11", "121", "x1y"]
    (tmp_path / "img").mkdir()
    for name in names:
        (tmp_path / "img" / f"{name}.png").write_bytes(b"")
    files = templates.image_files(tmp_path)
    found = templates.infer(pd.DataFrame({"id": names, "label": "a"}), "id", files, tmp_path)
    assert (found.template, found.channels, found.found, found.sampled) == ("img/{id}.png", None, 4, 4)


def test_folds_from_a_run_join_the_train_yaml_once_its_ids_are_the_tables(tmp_path, capsys, monkeypatch):
    """--folds-from RUN (a folder, or mlflow:<run-id>): folds_from and its folds in train.yaml when its folds.csv
    holds exactly the table's ids; a missing or an extra id is one line naming the first, and no train.yaml."""
    from src.config import load_config_file
    from src.runs import main as runs_main

    comp = tmp_path / "comp"
    csv, _ = helpers.image_folder(comp, n=24, num_classes=3)
    ids = pd.read_csv(csv, dtype=str)["id"].tolist()
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    (run / "config.yaml").write_text("arch: resnet18\n")
    folds = run / "fold0" / "folds.csv"

    pd.DataFrame({"id": ids[:3] + ids[4:], "fold": 0}).to_csv(folds, index=False)
    helpers.assert_refused(capsys, main, ["inspect", str(comp), "--folds-from", str(run)], comp,
                           f"--folds-from {run}: 1 of the 24 ids of {csv} are not in its folds.csv (the first: "
                           f"{ids[3]!r})")
    pd.DataFrame({"id": [*ids, "stranger"], "fold": 0}).to_csv(folds, index=False)
    helpers.assert_refused(capsys, main, ["inspect", str(comp), "--folds-from", str(run)], comp,
                           "holds 1 ids that")
    assert not (comp / "train.yaml").exists()

    pd.DataFrame({"id": ids[::-1], "fold": [i % 2 for i in range(24)]}).to_csv(folds, index=False)
    assert main(["inspect", str(comp), "--folds-from", str(run)]) == 0
    config = load_config_file(comp / "train.yaml")
    assert (config.split.folds_from, config.split.folds) == (str(run), 2)
    assert "--folds-from" in capsys.readouterr().out

    pytest.importorskip("mlflow")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = str(tmp_path / "mlruns")
    assert runs_main(["push", str(run), "--mlflow", store]) == 0
    shared = "mlflow:" + capsys.readouterr().out.strip().rsplit("mlflow:", 1)[1]
    assert main(["inspect", str(comp), "--folds-from", shared, "--mlflow", store]) == 0
    assert load_config_file(comp / "train.yaml").split.folds_from == shared
