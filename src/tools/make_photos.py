"""Writes a photo competition to measure on: random crops of the real photographs bundled with scikit-image and
scikit-learn, in a Kaggle layout.

    python -m src.tools.make_photos --out data/photos --images 20000 --size 500x375
    python -m src.tools.make_photos --out data/planetish --images 20000 --size 256x256 --multilabel --workers 2

writes ``train.csv`` (id,label) + ``train/<id>.jpg``, ``test/<id>.jpg``, ``sample_submission.csv`` (the test ids, a
default label) and ``solution.csv`` (the test labels, for scoring), the file names `src.tools.export_digits` uses;
then e.g. ``python -m src.train --train-csv data/photos/train.csv --image-dir data/photos/train --image-template
'{id}.jpg'`` (add ``--multilabel`` for a ``--multilabel`` folder), or ``python -m src.kaggle inspect data/photos``.

Each image is a crop of one photograph at a random share of its area and aspect ratio, resized to ``--size``,
flipped at random, colour-jittered (brightness, contrast, saturation) and saved as a JPEG of quality 85-95, in the
manner of torchvision's ``RandomResizedCrop`` and ``ColorJitter``; its label is the photograph's name.
``--multilabel`` tiles the frame with 2-4 crops of distinct photographs and labels it with their space-separated
names, like the tags of Kaggle's Planet competition. Everything an image draws comes from
``numpy.random.default_rng([seed, index])``, so a command writes the same bytes whatever ``--workers``.

The photographs ship inside the wheels, nothing is downloaded: ``china`` and ``flower`` from scikit-learn's
``sklearn.datasets.load_sample_images`` (Pedregosa et al., JMLR 12, 2011), the others from ``skimage.data``
(van der Walt et al., PeerJ 2:e453, 2014, https://scikit-image.org/docs/stable/api/skimage.data.html, which gives
each photograph's author and licence). Only colour photographs are used: a grey one would be told apart by its
missing colour alone.

The folder is written beside ``--out`` under a temporary name and renamed into place when complete, so an
interrupted run leaves no folder that looks finished; an existing non-empty ``--out`` is refused (replaced, once the
new one is complete, with ``--overwrite``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")

    return load


# The classes: name -> loader of an RGB uint8 photograph (H, W, 3). The only place the names are written.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),  # Eileen Collins, NASA portrait (512, 512)
    "cat": _skimage("chelsea"),  # Chelsea the cat (300, 451)
    "china": _sklearn("china"),  # a Chinese temple (427, 640)
    "coffee": _skimage("coffee"),  # a cup of coffee (400, 600)
    "flower": _sklearn("flower"),  # a flower close-up (427, 640)
    "hubble": _skimage("hubble_deep_field"),  # Hubble eXtreme Deep Field (872, 1000)
    "motorcycle": _skimage("stereo_motorcycle"),  # a motorcycle, the stereo pair's left view (500, 741)
    "retina": _skimage("retina"),  # a human retina, fundus photograph (1411, 1411)
    "rocket": _skimage("rocket"),  # a SpaceX rocket on the launch pad (427, 640)
    "tissue": _skimage("immunohistochemistry"),  # stained tissue under a microscope (512, 512)
}
CLASSES = sorted(PHOTOS)

SCALE = (0.1, 1.0)  # share of the photograph's area a crop covers
RATIO = (3 / 4, 4 / 3)  # crop aspect ratio relative to the frame's (log-uniform)
JITTER = 0.2  # brightness, contrast and saturation factors drawn in [1 - JITTER, 1 + JITTER]
QUALITY = (85, 95)  # JPEG quality, inclusive
TILES = (2, 4)  # crops per multi-label mosaic, inclusive
MIN_SIDE = 16


@dataclasses.dataclass
class PhotosConfig:
    """Write a photo competition (Kaggle layout) from the photographs bundled with scikit-image and scikit-learn."""

    out: Path
    """The competition folder to write; refused if it exists and is not empty (see --overwrite)."""
    images: int = 20000
    """Training images (at least one per class)."""
    size: str = "500x375"
    """Image size WxH in pixels."""
    multilabel: bool = False
    """Each image a mosaic of 2-4 photographs, labelled with their space-separated names."""
    test_images: int | None = None
    """Test images; None: 10% of --images (at least 1)."""
    seed: int = 0
    """Seed of every draw; the same command writes byte-identical files."""
    workers: int = 1
    """Processes that make the images (the files do not depend on it)."""
    overwrite: bool = False
    """Replace an existing --out, once the new folder is complete."""

    def check(self) -> PhotosConfig:
        """Checks every field (not in ``__post_init__``: tyro would wrap the message in its own); returns self.

        Raises:
            ValueError: the first bad value, naming its flag.
        """
        if self.images < len(CLASSES):
            raise ValueError(f"--images {self.images}: need at least one per class ({len(CLASSES)} classes)")
        if self.test_images is not None and self.test_images < 1:
            raise ValueError(f"--test-images {self.test_images}: must be at least 1")
        if self.seed < 0:
            raise ValueError(f"--seed {self.seed}: must be >= 0")
        if self.workers < 1:
            raise ValueError(f"--workers {self.workers}: must be at least 1")
        parse_size(self.size)
        return self

    @property
    def width_height(self) -> tuple[int, int]:
        return parse_size(self.size)

    @property
    def test_count(self) -> int:
        return max(1, round(self.images / 10)) if self.test_images is None else self.test_images


def parse_size(text: str) -> tuple[int, int]:
    """``"500x375"`` -> ``(500, 375)`` (width, height).

    Raises:
        ValueError: not two integers >= 16 joined by ``x`` (names the flag).
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--size {text!r}: expected WxH in pixels, e.g. 500x375")
    width, height = int(match[1]), int(match[2])
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"--size {text}: width and height must be at least {MIN_SIDE} pixels")
    return width, height


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple[np.ndarray, ...]:
    """The source photographs, in the order of `CLASSES`: RGB uint8 arrays (H, W, 3), loaded once per process."""
    return tuple(np.ascontiguousarray(PHOTOS[name]()[..., :3]) for name in CLASSES)


def random_crop(photo: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A crop of ``photo`` covering a random share `SCALE` of its area, of aspect ratio ``width / height`` times a
    factor in `RATIO`, resized to ``(height, width)``, flipped left-right with probability 1/2 and colour-jittered.

    Args:
        photo: RGB uint8 (H, W, 3).
        width: output width in pixels.
        height: output height in pixels.
        rng: the image's generator.

    Returns:
        RGB uint8 (height, width, 3).
    """
    rows, cols = photo.shape[:2]
    area = rows * cols * rng.uniform(*SCALE)
    ratio = width / height * math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))  # crop width / height
    crop_w, crop_h = math.sqrt(area * ratio), math.sqrt(area / ratio)
    shrink = min(1.0, cols / crop_w, rows / crop_h)  # keep the ratio when the crop would not fit
    crop_w, crop_h = max(1, int(crop_w * shrink)), max(1, int(crop_h * shrink))
    top, left = int(rng.integers(rows - crop_h + 1)), int(rng.integers(cols - crop_w + 1))
    crop = photo[top : top + crop_h, left : left + crop_w]
    smaller = width * height < crop_w * crop_h
    image = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return color_jitter(image, rng)


def color_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scales brightness, then contrast (about the mean grey), then saturation (about each pixel's grey) by factors
    drawn in ``[1 - JITTER, 1 + JITTER]``, as torchvision's ``ColorJitter`` does in its fixed order, but as one
    affine colour map (no clipping between the steps): one pass over the pixels, 40 times faster than three.

    Args:
        image: RGB uint8 (H, W, 3).
        rng: the image's generator.

    Returns:
        RGB uint8 (H, W, 3), rounded and clipped to 0..255.
    """
    brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    luma = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as torchvision's rgb_to_grayscale
    mean_grey = brightness * float(np.dot(cv2.mean(image)[:3], luma))  # after the brightness step
    # y = s * (c * (b * x - m) + m) + (1 - s) * grey(same): linear in x
    matrix = contrast * brightness * (saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), luma))
    offset = np.full((3, 1), (1 - contrast) * mean_grey)
    return cv2.transform(image, np.hstack([matrix, offset]))  # (H, W, 3) uint8, saturated


def tiles(width: int, height: int, count: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Cuts the frame into ``count`` rectangles: the largest is split across its longer side at 35-65%, until there
    are ``count``.

    Returns:
        ``(left, top, width, height)`` per tile, covering the frame without overlap.
    """
    rects = [(0, 0, width, height)]
    while len(rects) < count:
        left, top, w, h = rects.pop(int(np.argmax([r[2] * r[3] for r in rects])))
        cut = rng.uniform(0.35, 0.65)
        if w >= h:
            first = max(1, round(w * cut))
            rects += [(left, top, first, h), (left + first, top, w - first, h)]
        else:
            first = max(1, round(h * cut))
            rects += [(left, top, w, first), (left, top + first, w, h - first)]
    return rects


def make_image(index: int, seed: int, width: int, height: int, multilabel: bool) -> tuple[np.ndarray, list[str], int]:
    """Image number ``index``: its pixels, labels and JPEG quality, drawn from ``default_rng([seed, index])``.

    The first photograph is class ``index % len(CLASSES)``, so every class appears once the images number at least
    the classes; a mosaic adds 1-3 distinct others, in random tiles.

    Args:
        index: the image's number (train and test images share one numbering).
        seed: the run's seed.
        width: image width in pixels.
        height: image height in pixels.
        multilabel: a mosaic of 2-4 photographs instead of one.

    Returns:
        RGB uint8 (height, width, 3), the sorted class names present, the JPEG quality.
    """
    rng = np.random.default_rng([seed, index])
    photos = load_photos()
    first = index % len(CLASSES)
    if multilabel:
        others = [c for c in range(len(CLASSES)) if c != first]
        count = int(rng.integers(*TILES, endpoint=True))
        chosen = [first, *rng.choice(others, size=count - 1, replace=False).tolist()]
        chosen = [chosen[i] for i in rng.permutation(count)]  # the class of the index is not always the first tile
        image = np.empty((height, width, 3), dtype=np.uint8)
        for source, (left, top, w, h) in zip(chosen, tiles(width, height, count, rng)):
            image[top : top + h, left : left + w] = random_crop(photos[source], w, h, rng)
    else:
        chosen = [first]
        image = random_crop(photos[first], width, height, rng)
    return image, sorted(CLASSES[c] for c in chosen), int(rng.integers(*QUALITY, endpoint=True))


def write_images(jobs: Sequence[tuple[int, Path]], seed: int, width: int, height: int, multilabel: bool) -> list[str]:
    """Makes and writes a chunk of images (`make_image`), on one OpenCV thread: the work of one pool task.

    Args:
        jobs: ``(index, path)`` per image; the JPEG of image ``index`` is written to ``path``.
        seed: the run's seed.
        width: image width in pixels.
        height: image height in pixels.
        multilabel: mosaics instead of single photographs.

    Returns:
        Each image's label, in the order of ``jobs``: its class names, space-separated.

    Raises:
        OSError: a file could not be encoded or written.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # --workers decides how many cores the run takes
    labels = []
    try:
        for index, path in jobs:
            image, names, quality = make_image(index, seed, width, height, multilabel)
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise OSError(f"{path}: could not encode the JPEG")
            path.write_bytes(data.tobytes())
            labels.append(" ".join(names))
    finally:
        cv2.setNumThreads(threads)
    return labels


def make_photos(config: PhotosConfig) -> Path:
    """Writes the competition folder ``config.out`` (see the module doc).

    Ids are the numbers 1 .. images + test images in a seeded random order, so train and test ids are disjoint and
    an id says nothing about its label. Train images have numbers 0 .. images - 1, test images the numbers after.

    Args:
        config: the checked flags (`PhotosConfig.check` runs first).

    Returns:
        The folder, as an absolute path.

    Raises:
        ValueError: a bad value in ``config``, or ``out`` exists and is not empty (without ``overwrite``) or is a
            file; nothing is written then.
    """
    out, (width, height) = Path(os.path.abspath(config.out)), config.check().width_height
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise ValueError(f"--out {out}: exists and is not empty (--overwrite replaces it)")
    total = config.images + config.test_count
    ids = np.random.default_rng([config.seed]).permutation(total) + 1  # (total,) int64: image number -> id
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    work.mkdir()  # not mkdtemp: the folder gets the umask's permissions, not 0700
    try:
        labels = _write_all(work, ids, config, width, height)
        table = pd.DataFrame({"id": ids, "label": labels})
        table.iloc[: config.images].sort_values("id").to_csv(work / "train.csv", index=False)
        solution = table.iloc[config.images :].sort_values("id")
        solution.to_csv(work / "solution.csv", index=False)
        default = " ".join(CLASSES[:2]) if config.multilabel else CLASSES[0]  # the format: tags or one label
        solution.assign(label=default).to_csv(work / "sample_submission.csv", index=False)
        _move_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _write_all(work: Path, ids: np.ndarray, config: PhotosConfig, width: int, height: int) -> list[str]:
    """Writes every image under ``work`` (train/, test/) in chunks, on ``config.workers`` processes."""
    (work / "train").mkdir()
    (work / "test").mkdir()
    paths = [work / ("train" if i < config.images else "test") / f"{ids[i]}.jpg" for i in range(len(ids))]
    jobs = list(enumerate(paths))
    step = max(1, min(64, len(jobs) // (config.workers * 8)))  # small: Ctrl-C waits for the running chunks
    chunks = [jobs[i : i + step] for i in range(0, len(jobs), step)]
    make = functools.partial(
        write_images, seed=config.seed, width=width, height=height, multilabel=config.multilabel
    )
    bar = tqdm(total=len(jobs), desc="images", unit="img", disable=None)  # no bar when not on a terminal
    labels: list[str] = []
    with bar:
        if config.workers == 1:
            for chunk in chunks:
                labels += make(chunk)
                bar.update(len(chunk))
        else:
            # spawn: the parent may hold torch's and OpenCV's threads, which a forked child would inherit locked
            pool = ProcessPoolExecutor(config.workers, get_context("spawn"), initializer=_ignore_interrupt)
            try:
                for chunk, done in zip(chunks, pool.map(make, chunks)):
                    labels += done
                    bar.update(len(chunk))
            finally:  # on an error or Ctrl-C, drop the chunks not started (a plain shutdown would make them all)
                pool.shutdown(cancel_futures=True)
    return labels


def _ignore_interrupt() -> None:
    """A worker leaves Ctrl-C to the parent, which stops the pool and removes the unfinished folder."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _move_into_place(work: Path, out: Path) -> None:
    """Renames the complete folder ``work`` to ``out``; an existing ``out`` is set aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old")) / out.name
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    from src.cli import parse_args, run_cli

    def command() -> None:
        config = parse_args(PhotosConfig, argv, prog="python -m src.tools.make_photos")
        out = make_photos(config)
        width, height = config.width_height
        kind = "multi-label mosaics" if config.multilabel else "photos"
        print(f"wrote {out}: {config.images} train and {config.test_count} test {kind} of {width}x{height}, "
              f"{len(CLASSES)} classes ({', '.join(CLASSES)})")

    return run_cli(command, interrupted="interrupted: --out is as it was (the unfinished folder is removed)")


if __name__ == "__main__":
    raise SystemExit(main())
