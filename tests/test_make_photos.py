"""python -m src.tools.make_photos: a seeded photo competition in a Kaggle layout that trains as it is written."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from src.tools import make_photos as tool
from src.tools.make_photos import CLASSES, PhotosConfig, main, make_photos

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 48)  # (W, H)
FLAGS = ["--size", "64x48"]


def _config(out: Path, **fields) -> PhotosConfig:
    return PhotosConfig(out=out, **{"images": 20, "size": "64x48", "test_images": 5, **fields})


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), and every folder (-> b"")."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"") for p in folder.rglob("*")}


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    names = ["train", "solution", "sample_submission"]
    return {name: pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False) for name in names}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(_config(tmp_path_factory.mktemp("photos") / "out"))


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory) -> Path:
    return make_photos(_config(tmp_path_factory.mktemp("mosaics") / "out", multilabel=True, images=30))


def test_every_class_loads_offline_as_a_colour_photograph():
    photos = tool.load_photos()
    assert len(photos) == len(CLASSES) == len(set(CLASSES)) and 8 <= len(CLASSES) <= 12
    for photo in photos:
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3 and min(photo.shape[:2]) >= 256
        assert np.abs(photo[..., 0].astype(int) - photo[..., 2]).mean() > 5  # not grey in disguise


def test_layout_ids_labels_and_images(photos):
    tables = _tables(photos)
    train, solution, sample = tables["train"], tables["solution"], tables["sample_submission"]
    assert sorted(p.name for p in photos.iterdir()) == [
        "sample_submission.csv", "solution.csv", "test", "train", "train.csv"
    ]
    assert list(train.columns) == list(sample.columns) == ["id", "label"] and len(train) == 20 and len(solution) == 5
    assert sorted(f"{i}.jpg" for i in train["id"]) == sorted(p.name for p in (photos / "train").iterdir())
    assert sorted(f"{i}.jpg" for i in solution["id"]) == sorted(p.name for p in (photos / "test").iterdir())
    assert not set(train["id"]) & set(solution["id"]) and train["id"].is_unique and solution["id"].is_unique
    assert sample["id"].tolist() == solution["id"].tolist() and sample["label"].nunique() == 1
    assert set(train["label"]) == set(CLASSES)  # every class once the images number at least the classes
    assert set(solution["label"]) <= set(CLASSES) and set(sample["label"]) <= set(CLASSES)
    for path in [*(photos / "train").iterdir(), *(photos / "test").iterdir()]:
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, whatever the extension
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8
    assert not [p for p in photos.parent.iterdir() if p != photos]  # no temporary folder left beside it


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, photos):
    again = make_photos(_config(tmp_path / "again"))
    pool = make_photos(_config(tmp_path / "pool", workers=2))
    assert _snapshot(again) == _snapshot(photos) == _snapshot(pool)


def test_another_seed_other_images(tmp_path, photos):
    other = make_photos(_config(tmp_path / "other", seed=1))
    first, second = _snapshot(photos), _snapshot(other)
    jpegs = [name for name in first if name.endswith(".jpg") and name in second]
    assert first["train.csv"] != second["train.csv"] and all(first[n] != second[n] for n in jpegs)


def test_multilabel_rows_hold_two_to_four_distinct_tags(mosaics):
    tables = _tables(mosaics)
    for table in (tables["train"], tables["solution"]):
        for row in table["label"]:
            tags = row.split(" ")
            assert 2 <= len(tags) <= 4 and len(set(tags)) == len(tags) and set(tags) <= set(CLASSES)
    counts = tables["train"]["label"].str.split().map(len)
    assert counts.nunique() > 1  # the mosaics vary in size
    sample = tables["sample_submission"]
    assert sample["id"].tolist() == tables["solution"]["id"].tolist()
    assert all(len(row.split(" ")) > 1 and set(row.split(" ")) <= set(CLASSES) for row in sample["label"])
    image = cv2.imread(str(next((mosaics / "train").iterdir())))
    assert image.shape == (SIZE[1], SIZE[0], 3)


def test_color_jitter_is_the_three_steps_in_order():
    image = cv2.resize(tool.load_photos()[CLASSES.index("coffee")], (40, 30))  # (30, 40, 3) uint8
    b, c, s = np.random.default_rng(3).uniform(1 - tool.JITTER, 1 + tool.JITTER, size=3)
    luma = np.array([0.299, 0.587, 0.114])
    x = image * b  # (H, W, 3) float64: brightness, contrast about the mean grey, saturation about each pixel's grey
    x = (x - (x @ luma).mean()) * c + (x @ luma).mean()
    x = (x - (x @ luma)[..., None]) * s + (x @ luma)[..., None]
    expected = np.clip(np.rint(x), 0, 255)
    got = tool.color_jitter(image, np.random.default_rng(3))
    assert got.dtype == np.uint8 and got.shape == image.shape and np.abs(got - expected).max() <= 1


@pytest.mark.parametrize("count", [2, 3, 4])
def test_tiles_cover_the_frame_once(count):
    cover = np.zeros((37, 53), dtype=int)  # (H, W)
    rects = tool.tiles(53, 37, count, np.random.default_rng(count))
    for left, top, w, h in rects:
        assert w >= 1 and h >= 1
        cover[top : top + h, left : left + w] += 1
    assert len(rects) == count and (cover == 1).all()


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--size", "500"], "--size '500': expected WxH"),
        (["--size", "0x48"], "--size 0x48: width and height"),
        (["--size", "64x-48"], "--size '64x-48': expected WxH"),
        (["--images", str(len(CLASSES) - 1)], f"need at least one per class ({len(CLASSES)} classes)"),
        (["--test-images", "0"], "--test-images 0"),
        (["--workers", "0"], "--workers 0"),
        (["--bogus"], "Unrecognized options: --bogus"),
    ],
)
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, flags, expected):
    before = _snapshot(tmp_path)
    assert main(["--out", str(tmp_path / "new" / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err and "Traceback" not in err
    assert _snapshot(tmp_path) == before


def test_an_existing_folder_is_refused_by_name_and_kept(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    before = _snapshot(tmp_path)
    assert main(["--out", str(out), "--images", "20", *FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "--overwrite" in err
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_a_folder_and_an_empty_one_is_taken(tmp_path, photos):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["--out", str(out), "--images", "20", "--test-images", "5", *FLAGS]) == 0  # empty: taken as it is
    (out / "mine.txt").write_text("old")
    assert main(["--out", str(out), "--images", "20", "--test-images", "5", *FLAGS, "--overwrite"]) == 0
    assert _snapshot(out) == _snapshot(photos) and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_run_leaves_out_as_it_was(tmp_path, monkeypatch, overwrite):
    out = tmp_path / "out"
    if overwrite:
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    before = _snapshot(tmp_path)
    real = tool.make_image

    def failing(index, *args):
        if index == 7:
            raise OSError("disk full")
        return real(index, *args)

    monkeypatch.setattr(tool, "make_image", failing)
    with pytest.raises(OSError, match="disk full"):
        make_photos(_config(out, overwrite=overwrite))
    assert _snapshot(tmp_path) == before  # no half-written out, no temporary folder


def test_the_folder_trains(tmp_path):
    # 5 rows per class: the trainer's stratified 5-fold split; resnet18 is the quickest registered CPU model
    out = make_photos(_config(tmp_path / "photos", images=5 * len(CLASSES)))
    command = [
        sys.executable, "-m", "src.train", "--train-csv", str(out / "train.csv"), "--image-dir", str(out / "train"),
        "--image-template", "{id}.jpg", "--dry-run", "--no-progress", "--arch", "resnet18",
    ]
    before = _snapshot(out)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dry run" in result.stdout + result.stderr and _snapshot(out) == before


@pytest.mark.slow
def test_the_multilabel_folder_trains(tmp_path, mosaics):
    command = [
        sys.executable, "-m", "src.train", "--train-csv", str(mosaics / "train.csv"), "--image-dir",
        str(mosaics / "train"), "--image-template", "{id}.jpg", "--multilabel", "--dry-run", "--no-progress",
        "--arch", "resnet18",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
