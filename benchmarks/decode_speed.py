"""JPEG decode speed on one thread: images/s of a full decode to uint8 RGB (H, W, 3) by OpenCV, Pillow,
simplejpeg and torchvision, reduced-scale decodes (libjpeg's DCT scaling, 1/2, 1/4, 1/8), and the cost of
reading the file's bytes alone; then decode + training augmentation through `src.data.images.FileImages`.

    python -m benchmarks.decode_speed [--images 300] [--repeats 5] [--target 224]

The test JPEGs (quality 90, `cv2.imencode`) are crops of the two photos scikit-learn ships
(`sklearn.datasets.load_sample_images`, 640x427), resized to 500x375 (``--images`` of them), 1024x768 and
2000x1500 (fewer, about the same number of pixels in all: at least 40). The large ones are upscaled and so
smoother than real photos of that size: their entropy decoding is cheaper than a camera's.

A reduced decode is measured at the factor `src.data.images.FileImages` would use for ``--target`` (the largest of
2, 4, 8 that keeps both sides >= target), OpenCV's at every factor that keeps both sides >= target. Within each
repeat the decoders alternate (in a rotated order); medians over the repeats are printed, with the ratio to the
trainer's former decoder (``cv2.imread`` + ``cvtColor``) and the largest / mean absolute difference of each
output from OpenCV's at the same scale. simplejpeg is measured when installed (``pip install simplejpeg``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from src.augmentations import build_transforms, reseed
from src.data.batch_augment import build_batch_pipeline
from src.data.images import FileImages, reduction

SIZES = [(500, 375), (1024, 768), (2000, 1500)]  # (width, height)
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
BATCH = 32


def write_jpegs(root: Path, size: tuple[int, int], count: int, seed: int) -> list[str]:
    """``count`` JPEGs of ``size`` (width, height): random 4:3 crops of scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # RGB (427, 640, 3) each
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height = int(rng.integers(photo.shape[0] // 2, photo.shape[0] + 1))
        width = min(height * 4 // 3, photo.shape[1])
        top = int(rng.integers(0, photo.shape[0] - height + 1))
        left = int(rng.integers(0, photo.shape[1] - width + 1))
        crop = photo[top : top + height, left : left + width]
        interpolation = cv2.INTER_AREA if size[0] < width else cv2.INTER_CUBIC
        image = cv2.cvtColor(cv2.resize(crop, size, interpolation=interpolation), cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        path = root / f"{size[0]}x{size[1]}_{i:04d}.jpg"
        path.write_bytes(data.tobytes())
        paths.append(str(path))
    return paths


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def decoders(factor: int, target: int) -> dict[str, Callable[[str], np.ndarray]]:
    """The decoders to compare on images that the trainer decodes at 1/``factor`` (1: full decode)."""
    import torchvision.io
    from PIL import Image

    def pillow(path: str, draft: bool = False) -> np.ndarray:
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (target, target))
            return np.asarray(image.convert("RGB"))

    def torchvision_decode(path: str) -> np.ndarray:
        data = torchvision.io.read_file(path)
        image = torchvision.io.decode_jpeg(data, mode=torchvision.io.ImageReadMode.RGB)  # (3, H, W)
        return image.permute(1, 2, 0).contiguous().numpy()  # (H, W, 3), as the pipelines take it

    def former(path: str) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)

    table: dict[str, Callable[[str], np.ndarray]] = {
        "read bytes only": lambda p: np.frombuffer(read_bytes(p), np.uint8),
        "cv2.imread + cvtColor (former)": former,
        "cv2.imread IMREAD_COLOR_RGB": lambda p: cv2.imread(p, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION),
        "cv2.imdecode(bytes) + cvtColor": lambda p: cv2.cvtColor(
            cv2.imdecode(np.frombuffer(read_bytes(p), np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB
        ),
        "FileImages(target_size) (new)": lambda p: FileImages([(p,)], target_size=target)[0],
        "Pillow open + convert('RGB')": pillow,
        "torchvision.io.decode_jpeg (CPU)": torchvision_decode,
    }
    if has_simplejpeg():
        import simplejpeg

        table["simplejpeg.decode_jpeg"] = lambda p: simplejpeg.decode_jpeg(read_bytes(p), colorspace="RGB")
    for k in (2, 4, 8):
        if k <= factor:
            flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[k]
            table[f"cv2.imread REDUCED_COLOR_{k} + cvtColor"] = lambda p, f=flags: cv2.cvtColor(
                cv2.imread(p, f | cv2.IMREAD_IGNORE_ORIENTATION), cv2.COLOR_BGR2RGB
            )
    if factor > 1:
        reduced_rgb = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4}.get(factor, 64)
        table[f"cv2.imread REDUCED_{factor} | COLOR_RGB"] = lambda p: cv2.imread(
            p, reduced_rgb | cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
        )
        table[f"Pillow draft 1/{factor}"] = lambda p: pillow(p, draft=True)
        if has_simplejpeg():

            def simplejpeg_reduced(path: str) -> np.ndarray:
                data = read_bytes(path)
                height, width, _, _ = simplejpeg.decode_jpeg_header(data)
                return simplejpeg.decode_jpeg(
                    data, colorspace="RGB", min_height=-(-height // factor), min_width=-(-width // factor)
                )

            table[f"simplejpeg 1/{factor}"] = simplejpeg_reduced
    return table


def has_simplejpeg() -> bool:
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        return False
    return True


def time_alternating(runs: dict[str, Callable[[], object]], repeats: int, count: int) -> dict[str, tuple[float, float]]:
    """Median (images/s by the wall clock, images per CPU second) of each run, alternated within each repeat."""
    names = list(runs)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up: page cache, lazy imports, first-call allocations
        runs[name]()
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            wall[name].append(count / (time.perf_counter() - start))
            cpu[name].append(count / max(time.process_time() - start_cpu, 1e-9))
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}


def differences(paths: list[str], table: dict[str, Callable[[str], np.ndarray]]) -> dict[str, str]:
    """Largest / mean absolute difference of each decoder's output from OpenCV's at the same scale, over the
    images; a reduced decode is also compared with the full decode shrunk to its size (INTER_AREA)."""
    notes = {}
    for name, decode in table.items():
        if name == "read bytes only":
            continue
        worst, means, shapes, area = 0, [], set(), []
        for path in paths:
            image = decode(path)
            height, width = image.shape[:2]
            full = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            factor = full.shape[0] // height
            flags = {1: cv2.IMREAD_UNCHANGED, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
            reference = cv2.cvtColor(cv2.imread(path, flags.get(factor, cv2.IMREAD_REDUCED_COLOR_8)), cv2.COLOR_BGR2RGB)
            diff = np.abs(image.astype(np.int16) - reference.astype(np.int16))
            worst, shapes = max(worst, int(diff.max())), shapes | {image.shape}
            means.append(float(diff.mean()))
            if factor > 1:
                rgb = cv2.cvtColor(full, cv2.COLOR_BGR2RGB)
                shrunk = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
                area.append(float(np.abs(image.astype(np.int16) - shrunk.astype(np.int16)).mean()))
        note = f"{sorted(shapes)[0][:2]}, vs cv2: max {worst} mean {statistics.mean(means):.3f}"
        notes[name] = note + (f"; vs full+INTER_AREA: mean {statistics.mean(area):.2f}" if area else "")
    return notes


def print_table(title: str, results: dict[str, tuple[float, float]], notes: dict[str, str], baseline: str) -> None:
    print(f"\n{title}")
    base = results[baseline][0]
    for name, (wall, cpu) in results.items():
        print(f"  {name:42s} {wall:8.0f} img/s  x{wall / base:5.2f}  (cpu {cpu:6.0f} img/s)  {notes.get(name, '')}")


def pipeline_runs(paths: list[str], target: int) -> dict[str, Callable[[], object]]:
    """Decode + the light train augmentation at ``target`` px through `FileImages`: full decode vs reduced
    (where the file is large enough), with the batch pipeline (batches of 32; what a loader worker does: resize and
    draw, the warp and normalisation then run on the GPU, `src.data.batch_augment.DeviceStage`) and with
    albumentations per image (all of it in the worker)."""
    full, reduced = FileImages([(p,) for p in paths]), FileImages([(p,) for p in paths], target_size=target)
    batch = build_batch_pipeline(target, "light", 0, "resize")  # the workers' part: warp and normalise on the GPU
    per_image = build_transforms(target, MEAN, STD, aug="light", seed=0)

    def batched(images: FileImages) -> None:
        for first in range(0, len(images), BATCH):
            rows = range(first, min(first + BATCH, len(images)))
            batch([images[row] for row in rows], [(row, 0, 0) for row in rows])

    def one_by_one(images: FileImages) -> None:
        for row in range(len(images)):
            reseed(per_image, (row, 0, 0))
            per_image(image=images[row])

    return {
        "full decode + batch pipeline (light)": lambda: batched(full),
        "FileImages(target) + batch pipeline (light)": lambda: batched(reduced),
        "full decode + albumentations (light)": lambda: one_by_one(full),
        "FileImages(target) + albumentations (light)": lambda: one_by_one(reduced),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="500x375 images (fewer of the larger sizes)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target", type=int, default=224, help="training image side, pixels")
    args = parser.parse_args()
    default_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        groups = []
        for seed, (width, height) in enumerate(SIZES):
            count = max(40, round(args.images * SIZES[0][0] * SIZES[0][1] / (width * height)))
            groups.append(((width, height), write_jpegs(Path(tmp), (width, height), count, seed)))
        print(f"one thread (cv2.setNumThreads(1), torch 1 thread); target {args.target} px; {args.repeats} repeats")
        for (width, height), paths in groups:
            factor = reduction(height, width, args.target)
            table = decoders(factor, args.target)
            runs = {name: (lambda d=decode, ps=paths: [d(p) for p in ps]) for name, decode in table.items()}
            results = time_alternating(runs, args.repeats, len(paths))
            title = f"{width}x{height}, {len(paths)} JPEGs (reduction 1/{factor} at target {args.target})"
            print_table(title, results, differences(paths[:10], table), "cv2.imread + cvtColor (former)")

        small = groups[0][1]
        former = decoders(1, args.target)["cv2.imread + cvtColor (former)"]
        pipeline = pipeline_runs(small, args.target)["FileImages(target) + albumentations (light)"]
        threads: dict[str, Callable[[], object]] = {}
        for count in sorted({1, default_threads}):
            threads[f"{count} OpenCV thread(s): imread + cvtColor"] = lambda c=count: (
                cv2.setNumThreads(c),
                [former(p) for p in small],
            )
            threads[f"{count} OpenCV thread(s): FileImages + albumentations"] = lambda c=count: (
                cv2.setNumThreads(c),
                pipeline(),
            )
        results = time_alternating(threads, args.repeats, len(small))
        cv2.setNumThreads(1)
        title = f"OpenCV threads (cv2.setNumThreads), {SIZES[0][0]}x{SIZES[0][1]}; cpu: images per CPU second"
        print_table(title, results, {}, next(iter(threads)))

        for (width, height), paths in groups:
            results = time_alternating(pipeline_runs(paths, args.target), args.repeats, len(paths))
            title = f"decode + train augmentation at {args.target} px, {width}x{height}, {len(paths)} JPEGs"
            print_table(title, results, {}, "full decode + batch pipeline (light)")


if __name__ == "__main__":
    main()
