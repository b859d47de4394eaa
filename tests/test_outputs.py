"""src.inference.outputs: weights read with a one-line error; outputs replaced together, and only when the block
succeeds."""

import pytest
import torch

from src.inference.outputs import check_folder, read_weights, replacing, replacing_folder
from tests.helpers import fingerprint


def test_read_weights_names_a_truncated_file(tmp_path):
    path = tmp_path / "best_model_1_valid_accuracy=0.5.pt"
    torch.save({"w": torch.ones(3)}, path)
    assert read_weights(path, mmap=True)["w"].tolist() == [1.0, 1.0, 1.0]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{path}: cannot be read, truncated or corrupt"):
        read_weights(path)


def test_check_folder_refuses_a_file_or_a_folder_under_one(tmp_path):
    (tmp_path / "f").write_text("")
    check_folder(tmp_path / "new" / "deeper", "--out")
    for path in (tmp_path / "f", tmp_path / "f" / "below"):
        with pytest.raises(ValueError, match=f"--out {path}: {tmp_path / 'f'} is a file"):
            check_folder(path, "--out")


def test_replacing_renames_every_file_at_the_end_or_none(tmp_path):
    (tmp_path / "a.csv").write_text("old a")
    with pytest.raises(OSError):
        with replacing([tmp_path / "a.csv", tmp_path / "new" / "b.csv"]) as (a, b):
            a.write_text("new a")
            raise OSError("disk full")  # before b is written
    assert sorted(fingerprint(tmp_path)) == ["a.csv"]  # no temporary file left, no new folder made
    assert (tmp_path / "a.csv").read_text() == "old a"
    with replacing([tmp_path / "a.csv", tmp_path / "new" / "b.csv"]) as (a, b):
        a.write_text("new a")
        b.write_text("new b")
    assert (tmp_path / "a.csv").read_text() == "new a" and (tmp_path / "new" / "b.csv").read_text() == "new b"
    assert sorted(fingerprint(tmp_path)) == ["a.csv", "new", "new/b.csv"]


def test_replacing_folder_builds_whole_or_leaves_the_earlier_one(tmp_path):
    out = tmp_path / "deep" / "soup"
    with pytest.raises(ValueError):
        with replacing_folder(out) as build:
            (build / "part.pt").write_text("half")
            raise ValueError("failed")
    assert list(tmp_path.iterdir()) == []  # no folder made, no temporary one left
    with replacing_folder(out) as build:
        (build / "fold0").mkdir()
        (build / "fold0" / "old.pt").write_text("1")
        (build / "best_model_a=0.5.pt").write_text("1")
        (build / "soup.json").write_text("{}")
    (out / "kept.txt").write_text("mine")
    before = fingerprint(tmp_path)
    with pytest.raises(ValueError):
        with replacing_folder(out, stale=["best_model_*.pt"]) as build:
            (build / "soup.json").write_text('{"new": 1}')
            raise ValueError("failed")
    assert fingerprint(tmp_path) == before
    with replacing_folder(out, stale=["best_model_*.pt"]) as build:
        (build / "fold0").mkdir()
        (build / "fold0" / "new.pt").write_text("2")
        (build / "best_model_a=0.7.pt").write_text("2")
        (build / "soup.json").write_text('{"new": 1}')
    assert sorted(fingerprint(tmp_path)) == [
        "deep", "deep/soup", "deep/soup/best_model_a=0.7.pt", "deep/soup/fold0", "deep/soup/fold0/new.pt",
        "deep/soup/kept.txt", "deep/soup/soup.json",
    ]  # a sub-folder replaced whole, the stale best model gone, the other file kept
