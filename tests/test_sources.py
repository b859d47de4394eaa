"""Data layouts: each read into rows and uint8 images; bad files, labels, pixels and drawings named."""

import json
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from src.data.images import ArrayImages, FileImages, jpeg_frame, reduction
from src.data.sources import decode_all
from src.data.strokes import parse_strokes, rasterize, strokes_to_sequence
from tests import helpers
from tests.helpers import load


def test_strokes_become_dx_dy_pen_rows_padded_with_a_mask():
    strokes = [np.array([[0, 0], [255, 0]]), np.array([[255, 255]])]
    seq = strokes_to_sequence(strokes, max_strokes=3, max_stroke_length=2)
    assert seq.shape == (6, 4) and seq.dtype == np.float32
    expected = [[0, 0, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert np.allclose(seq, expected)
    # the caps: the first stroke only, and the first point of each stroke
    assert np.allclose(strokes_to_sequence(strokes, 1, 2)[:, 3], [1, 1])
    assert np.allclose(strokes_to_sequence(strokes, 2, 1)[:, :3], [[0, 0, 1], [1, 1, 1]])


def test_image_folder_layout_reads_grey_pngs_with_their_labels(tmp_path):
    csv, folder = helpers.image_folder(tmp_path, n=12, num_classes=3)
    data = load(train_csv=str(csv), image_dir=str(folder))
    images, labels = helpers.class_images(12, 3)
    assert data.in_chans == 1 and data.classes == ["c0", "c1", "c2"]
    assert np.array_equal(data.targets, labels)
    assert np.array_equal(data.source.images[5][..., 0], images[5])  # PNG is lossless


def test_image_folder_template_with_columns_and_colour_order(tmp_path):
    (tmp_path / "red").mkdir()
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    for i in range(4):
        cv2.imwrite(str(tmp_path / "red" / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    pd.DataFrame({"name": list("0123"), "colour": "red", "label": ["a", "b", "a", "b"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    data = load(
        train_csv=str(tmp_path / "t.csv"), image_dir=str(tmp_path), image_template="{colour}/{id}.png", id_col="name"
    )
    assert data.in_chans == 3 and data.source.images[0][0, 0].tolist() == [200, 0, 0]


def test_six_channel_files_stack_into_one_image(tmp_path):
    csv, root = helpers.six_channel(tmp_path, n=6)
    data = load(train_csv=str(csv), image_dir=str(root), **helpers.SIX_CHANNEL)
    image = data.source.images[0]
    assert image.shape == (16, 16, 6) and data.in_chans == 6
    background = image[image[..., 0] < 100]  # pixels outside the bright square hold 10 x channel
    assert background[0].tolist() == [10, 20, 30, 40, 50, 60]


def test_pixel_csv_layout_round_trips_the_images(tmp_path):
    csv = helpers.pixel_csv(tmp_path, n=12)
    data = load(train_csv=str(csv))
    images, labels = helpers.class_images(12, 3)
    assert np.array_equal(data.source.images.images[..., 0], images)
    assert data.classes == ["0", "1", "2"] and np.array_equal(data.targets, labels)


def test_parquet_layout_aligns_ids_and_reads_three_heads(tmp_path):
    csv, pattern = helpers.parquet_multihead(tmp_path, n=12, height=12, width=16)
    data = load(
        train_csv=str(csv),
        parquet=pattern,
        id_col="image_id",
        height=12,
        width=16,
        label_col="grapheme_root,vowel_diacritic,consonant_diacritic",
        head_weights="2,1,1",
    )
    expected = np.load(tmp_path / "images.npy")
    table = pd.read_csv(csv)
    first = int(table["image_id"][0].split("_")[1])  # train.csv is in reverse order
    assert np.array_equal(data.source.images[0][..., 0], expected[first])
    assert data.task.kind == "multihead" and data.task.sizes == [4, 3, 2] and data.task.weights == (2.0, 1.0, 1.0)
    assert data.targets.shape == (12, 3)
    assert data.targets[0].tolist() == [0, 0, 0] and data.targets[5].tolist() == [1, 2, 1]


def test_strokes_layout_rasterizes_one_csv_per_class_and_caps_rows(tmp_path):
    folder = helpers.stroke_csvs(tmp_path, per_class=10)
    data = load(train_csv=str(folder / "*.csv"), label_col="word", max_per_class=4, img_size=32, id_col="key_id")
    assert data.classes == ["cat", "house", "the sun"] and np.bincount(data.targets).tolist() == [4, 4, 4]
    image = data.source.images[0]
    assert image.shape == (32, 32, 1) and image.dtype == np.uint8 and image.max() == 255


def test_rasterize_encodes_stroke_order_as_intensity():
    strokes = parse_strokes(json.dumps([[[0, 255], [10, 10]], [[0, 255], [200, 200]]]))
    image = rasterize(strokes, 64, line_width=1)[..., 0]
    assert image.shape == (64, 64)
    first_row, second_row = image[int(10 * 62 / 255) + 1], image[int(200 * 62 / 255) + 1]
    assert first_row.max() == 255 and second_row.max() == 242  # the second stroke is 13 darker


def _image_csv(tmp_path, n=6):
    csv, folder = helpers.image_folder(tmp_path, n=n, num_classes=2)
    return {"train_csv": str(csv), "image_dir": str(folder)}, csv, folder


def test_missing_image_names_the_file_and_line(tmp_path):
    options, _, folder = _image_csv(tmp_path)
    (folder / "img00003.png").unlink()
    with pytest.raises(ValueError, match=r"train.csv line 5: image file .*img00003.png not found"):
        load(**options)


def test_undecodable_image_is_named_and_skip_bad_counts_it(tmp_path, caplog):
    options, _, folder = _image_csv(tmp_path)
    (folder / "img00002.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"line 4: image file .*img00002.png cannot be decoded"):
        load(**options)
    data = load(**{**options, "skip_bad": True})
    assert len(data) == 5 and "img00002" not in data.source.ids()
    assert "skipped 1 of 6 rows" in caplog.text
    cached = load(**{**options, "skip_bad": True, "cache": True})  # one decoding pass, kept in memory
    assert isinstance(cached.source.images, ArrayImages) and len(cached.source.images) == 5
    assert all(np.array_equal(cached.source.images[i], data.source.images[i]) for i in range(5))


@pytest.mark.parametrize(
    "edit,flags,message",
    [
        (lambda t: t.assign(label=t["label"].where(t.index != 2)), {}, r"line 4: column 'label' is empty"),
        (lambda t: t, {"classes": "c0,c9"}, r"line 3: label 'c1' in column 'label' is not in the class list"),
        (lambda t: t.drop(columns=["label"]), {}, r"column\(s\) \['label'\] not found"),
        (lambda t: t.iloc[:0], {}, r"no rows"),
    ],
)
def test_bad_labels_and_tables_get_clear_messages(tmp_path, edit, flags, message):
    options, csv, _ = _image_csv(tmp_path)
    edit(pd.read_csv(csv)).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=message):
        load(**{**options, **flags})


def test_bad_pixels_are_named(tmp_path):
    csv = helpers.pixel_csv(tmp_path, n=6)
    table = pd.read_csv(csv)
    with pytest.raises(ValueError, match="256 pixel columns; expected height x width x channels = 16 x 15 x 1 = 240"):
        load(train_csv=str(csv), height=16, width=15)
    table.loc[3, "pixel5"] = 300
    table.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"line 5: pixel column pixel5 is 300"):
        load(train_csv=str(csv))


def test_bad_drawing_is_named(tmp_path):
    folder = helpers.stroke_csvs(tmp_path, per_class=3)
    table = pd.read_csv(folder / "cat.csv")
    table.loc[1, "drawing"] = "[[1, 2"
    table.to_csv(folder / "cat.csv", index=False)
    with pytest.raises(ValueError, match=r"cat.csv line 3: drawing '\[\[1, 2' is not JSON strokes"):
        load(train_csv=str(folder / "*.csv"), label_col="word")


def test_class_list_from_a_file_keeps_unseen_classes(tmp_path):
    options, _, _ = _image_csv(tmp_path)
    (tmp_path / "classes.txt").write_text("c0\nc1\nc2\n")
    data = load(**{**options, "classes": str(tmp_path / "classes.txt")})
    assert data.classes == ["c0", "c1", "c2"] and data.task.num_outputs == 3  # c2 has no training rows


def test_checking_every_image_shows_a_bar_when_asked_on_a_terminal(tmp_path, capsys, monkeypatch):
    csv, folder = helpers.image_folder(tmp_path, n=12)
    source = load(train_csv=str(csv), image_dir=str(folder)).source
    decode_all(source, keep=True, progress=True)
    assert capsys.readouterr().err == ""  # stderr is a file here: no bar redrawn into it
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    decoded, bad = decode_all(source, keep=True, progress=True)
    assert len(decoded) == 12 and bad == []
    assert "checking images: 100%" in capsys.readouterr().err
    decode_all(source)
    assert capsys.readouterr().err == ""


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB picture with edges (gradients, a disc, a bar): uint8 (height, width, 3)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([255 * x / width, 255 * y / height, 128 + 60 * np.sin((x + y) / 9.0 + seed)], axis=2)
    disc = (x - width / 3) ** 2 + (y - height / 2) ** 2 < (min(height, width) / 4) ** 2
    image[disc] = [230, 40, 60]
    image[height // 4 : height // 4 + 6] = 20
    return image.astype(np.uint8)


def _write_jpeg(path, rgb: np.ndarray, progressive: bool = False) -> str:
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    return str(path)


@pytest.mark.parametrize("progressive", [False, True])
def test_large_jpeg_with_a_target_decodes_at_a_reduced_scale_close_to_the_full_image(tmp_path, progressive):
    path = _write_jpeg(tmp_path / "big.jpg", _photo(144, 208), progressive)
    full = FileImages([(path,)])[0]  # (144, 208, 3)
    reduced = FileImages([(path,)], target_size=32)[0]
    assert reduced.shape == (36, 52, 3) and reduced.dtype == np.uint8  # 1/4: 1/8 would leave 18 < 32 rows
    assert FileImages([(path,)], target_size=40)[0].shape == (72, 104, 3)  # 1/2
    assert FileImages([(path,)], target_size=18)[0].shape == (18, 26, 3)  # 1/8
    for size in [(52, 36), (32, 32)]:  # the reduced decode's size, the model's
        expected = cv2.resize(full, size, interpolation=cv2.INTER_AREA).astype(np.int16)
        assert np.abs(cv2.resize(reduced, size, interpolation=cv2.INTER_AREA) - expected).mean() < 2.0


def test_jpeg_below_twice_the_target_decodes_as_without_one(tmp_path):
    colour = _write_jpeg(tmp_path / "colour.jpg", _photo(60, 80))  # 60 < 2 x 32
    grey = _write_jpeg(tmp_path / "grey.jpg", _photo(60, 80)[..., 1])
    today = cv2.cvtColor(cv2.imread(colour, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert np.array_equal(FileImages([(colour,)], target_size=32)[0], today)
    for grayscale in (False, True):
        for path in (colour, grey):
            plain = FileImages([(path,)], grayscale)[0]
            assert np.array_equal(FileImages([(path,)], grayscale, target_size=32)[0], plain)
    assert FileImages([(grey,)], target_size=32)[0].shape == (60, 80, 1)
    assert FileImages([(colour,)], target_size=None)[0].shape == (60, 80, 3)


def test_png_and_16_bit_files_ignore_the_target(tmp_path):
    photo = _photo(144, 208)
    cv2.imwrite(str(tmp_path / "big.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "deep.png"), photo[..., 0].astype(np.uint16) * 257)
    assert np.array_equal(FileImages([(str(tmp_path / "big.png"),)], target_size=32)[0], photo)
    deep = FileImages([(str(tmp_path / "deep.png"),)], target_size=32)[0]
    assert np.array_equal(deep[..., 0], photo[..., 0])


def test_grayscale_and_grey_jpegs_reduce_to_one_channel(tmp_path):
    colour = _write_jpeg(tmp_path / "colour.jpg", _photo(144, 208))
    grey = _write_jpeg(tmp_path / "grey.jpg", _photo(144, 208)[..., 1])
    for path, grayscale in [(colour, True), (grey, False), (grey, True)]:
        full = FileImages([(path,)], grayscale)[0]
        reduced = FileImages([(path,)], grayscale, target_size=32)[0]
        assert full.shape == (144, 208, 1) and reduced.shape == (36, 52, 1)
        shrunk = cv2.resize(full, (52, 36), interpolation=cv2.INTER_AREA).astype(np.int16)
        assert np.abs(reduced[..., 0] - shrunk).mean() < 2.0


def test_exif_orientation_is_treated_as_without_a_target(tmp_path):
    from PIL import Image

    image = Image.fromarray(_photo(144, 208))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    image.save(tmp_path / "turned.jpg", exif=exif, quality=90)
    path = str(tmp_path / "turned.jpg")
    # IMREAD_UNCHANGED (colour) leaves the stored orientation; IMREAD_GRAYSCALE (--grayscale) applies EXIF's
    assert FileImages([(path,)])[0].shape[:2] == (144, 208) and FileImages([(path,)], True)[0].shape[:2] == (208, 144)
    assert FileImages([(path,)], target_size=32)[0].shape == (36, 52, 3)
    assert FileImages([(path,)], grayscale=True, target_size=32)[0].shape == (52, 36, 1)


def test_six_channel_jpegs_reduce_alike_and_subset_keeps_the_target(tmp_path):
    photo = _photo(144, 208)
    paths = tuple(_write_jpeg(tmp_path / f"w{c}.jpg", np.roll(photo[..., c % 3], 7 * c, axis=1)) for c in range(6))
    images = FileImages([paths, paths[::-1]], target_size=32)
    assert images[0].shape == (36, 52, 6)
    part = images.subset(np.array([1]))
    assert part.target_size == 32 and np.array_equal(part[0], images[0][..., ::-1])


def test_image_folder_decodes_for_the_largest_size_of_the_schedule(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(4):
        _write_jpeg(tmp_path / "img" / f"{i}.jpg", _photo(144, 208, seed=i))
    pd.DataFrame({"id": [f"{i}.jpg" for i in range(4)], "label": list("abab")}).to_csv(tmp_path / "t.csv", index=False)
    options = {"train_csv": str(tmp_path / "t.csv"), "image_dir": str(tmp_path / "img"), "image_template": "{id}"}
    assert load(**options, img_size=32).source.images[0].shape == (36, 52, 3)
    assert load(**options, img_size=16, img_size_schedule="16:0,40:2").source.images[0].shape == (72, 104, 3)
    six_options = {"image_template": "{experiment}/{id}_w{channel}.png", "channels": "1,2,3,4,5,6"}
    (tmp_path / "six").mkdir()
    csv, root = helpers.six_channel(tmp_path / "six", n=6)
    data = load(train_csv=str(csv), image_dir=str(root), label_col="sirna", img_size=8, **six_options)
    assert data.source.images[0].shape == (16, 16, 6)  # PNG channel files: as without a target


def test_jpeg_frame_reads_the_header_or_gives_none(tmp_path):
    path = _write_jpeg(tmp_path / "a.jpg", _photo(30, 50), progressive=True)
    data = open(path, "rb").read()
    assert jpeg_frame(data) == (30, 50, 3)
    assert jpeg_frame(data[:20]) is None and jpeg_frame(b"\x89PNG\r\n\x1a\n") is None
    assert reduction(30, 50, None) == 1 and reduction(64, 999, 32) == 2 and reduction(63, 999, 32) == 1
    assert reduction(256, 256, 32) == 8


def test_broken_jpeg_with_a_target_is_named_as_without_one(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match=r"t.csv line 2: image file .*bad.jpg cannot be decoded"):
        FileImages([(str(tmp_path / "bad.jpg"),)], where="t.csv", target_size=32)[0]
