"""The config groups of the data: what is read (`DataConfig`), pseudo-labels, distillation, the folds, the loaders."""

from __future__ import annotations

import dataclasses
from typing import Literal

from src.config.fields import (
    EVAL_MULTIPLE,
    Group,
    Names,
    Numbers,
    SizeSchedule,
    parse_class_names,
    parse_names,
    parse_numbers,
    parse_size_schedule,
    require,
    setting,
)


@dataclasses.dataclass
class DataConfig(Group):
    """Data source: the layout, what its columns mean, and how bad rows are handled (README "Bring your own data")."""

    layout: Literal["auto", "digits", "images", "pixels", "parquet", "strokes"] = "auto"
    """Data layout; 'auto': digits without --train-csv, parquet with --parquet, images with --image-dir,
    strokes for a CSV with a 'drawing' column, else pixels."""
    train_csv: str | None = None
    """Training table: a CSV path or a glob of CSVs (QuickDraw: one per class). None trains on the bundled digits."""
    image_dir: str | None = None
    """Folder the image paths of --image-template are relative to (layout 'images')."""
    image_template: str = "{id}.png"
    """Image path under --image-dir, filled from the row: {id} is the --id-col value, {<column>} any column,
    {channel} each of --channels (one file per channel, stacked)."""
    channels: Names | None = None
    """Comma-separated values of the {channel} field, e.g. '1,2,3,4,5,6' (Recursion: 6 files per image)."""
    grayscale: bool = False
    """Convert colour image files to one channel."""
    parquet: str | None = None
    """Parquet file(s) (path or glob) of flattened images: --id-col plus height x width pixel columns."""
    height: int | None = None
    """Image height in pixels of the pixel-CSV and parquet layouts (None: square)."""
    width: int | None = None
    """Image width in pixels of the pixel-CSV and parquet layouts (None: square)."""
    max_per_class: int | None = None
    """Read at most this many rows per class (QuickDraw)."""
    max_strokes: int = 20
    """--arch gru reads the first this many strokes of each drawing."""
    max_stroke_length: int = 32
    """--arch gru reads the first this many points of each stroke."""
    id_col: str = "id"
    """Column of sample ids (file names for --image-template's {id})."""
    label_col: Names = ("label",)
    """Label column; several comma-separated columns train one head each (Bengali.AI: 3 heads)."""
    multilabel: bool = False
    """The label column holds space-separated tags (Planet): multi-hot targets, BCE loss."""
    classes: Names | None = None
    """The class list, comma-separated or a file with one class per line; None: the labels seen in training."""
    head_weights: Numbers | None = None
    """Loss weight per label column, comma-separated (Bengali.AI: '2,1,1')."""
    meta_cols: Names | None = None
    """Metadata columns of the train and test tables fed beside the image (SIIM-ISIC: 'age,sex,site'): numbers
    standardised and categories one-hot encoded with the train fold's statistics, missing values imputed and flagged,
    through a small MLP fused with the image embedding (src.data.metadata)."""
    group_col: str | None = None
    """Column of groups (a plate, a patient) kept on one side of every fold."""
    fold_col: str = "fold"
    """A column with this name in the training table fixes the folds instead of the seeded split."""
    skip_bad: bool = False
    """Skip rows with a missing or undecodable image or a bad label (and report how many) instead of stopping."""
    verify_images: bool = True
    """Decode every image once before training so a bad file stops the run up front."""
    cache: bool = False
    """Decode all images into memory before training (small data sets)."""

    def check(self) -> None:
        self.channels, self.label_col = parse_names(self.channels), parse_names(self.label_col)
        self.meta_cols = parse_names(self.meta_cols) or None
        self.classes = parse_class_names(self.classes)
        self.head_weights = parse_numbers("head_weights", self.head_weights)
        for name in ("height", "width", "max_per_class"):
            value = getattr(self, name)
            require(name, value, value is None or value >= 1, "an integer >= 1 or None")
        require("max_strokes", self.max_strokes, self.max_strokes >= 1, "an integer >= 1")
        require("max_stroke_length", self.max_stroke_length, self.max_stroke_length >= 1, "an integer >= 1")
        require("label_col", self.label_col, bool(self.label_col), "one or more comma-separated column names")


@dataclasses.dataclass
class PseudoConfig(Group):
    """Pseudo-labels: confident test predictions that join the training folds (`src.data.pseudo`)."""

    pseudo_labels: str | None = None
    """Test predictions (test_predictions.csv of src.predict; mlflow:<run-id>: a shared run's) whose confident rows
    join the training folds."""
    pseudo_threshold: float = 0.95
    """Smallest top-class probability of a pseudo-labelled test image."""
    pseudo_test_csv: str | None = None
    """The test table of the pseudo-labelled images (same layout as the training data)."""
    pseudo_image_dir: str | None = None
    """Folder of the test images; None: --image-dir."""

    def check(self) -> None:
        ok = 0.0 <= self.pseudo_threshold <= 1.0
        require("pseudo_threshold", self.pseudo_threshold, ok, "a probability in [0, 1]")


@dataclasses.dataclass
class DistillConfig(Group):
    """Knowledge distillation: soft targets from a teacher's out-of-fold predictions (`src.data.distill`)."""

    teacher: str | None = None
    """A teacher: a --fold all run or an ensemble folder with oof.csv (and test_predictions.csv for
    --teacher-test), or mlflow:<run-id> (a shared run; the store from --mlflow or MLFLOW_TRACKING_URI). Each
    training row learns from the teacher's out-of-fold prediction of it."""
    teacher_weight: float = 0.5
    """Share of the teacher's soft targets in each training target (the rest: the hard label); 0 trains on the
    labels alone, 1 on the teacher alone."""
    teacher_temperature: float = 1.0
    """Softens (> 1) or sharpens (< 1) the teacher's probabilities: softmax(log p / T), per head; sigmoid(logit p /
    T) per tag."""
    teacher_test: bool = False
    """Also train on the test images (--pseudo-test-csv, --pseudo-image-dir) with the teacher's test predictions
    as their targets."""

    def check(self) -> None:
        weight, temperature = self.teacher_weight, self.teacher_temperature
        require("teacher_weight", weight, 0.0 <= weight <= 1.0, "a share in [0, 1]")
        require("teacher_temperature", temperature, temperature > 0, "a positive temperature")


@dataclasses.dataclass
class SplitConfig(Group):
    """Folds: how the rows are split and which fold validates."""

    folds: int = 5
    """Number of stratified folds."""
    fold: int | Literal["all"] = 0
    """Validation fold, 0 <= fold < folds, or 'all': every fold in turn (sub-folders fold<k>), then the out-of-fold
    predictions (oof.csv) and the CV score."""
    split_seed: int | None = None
    """Seed of the fold assignment (and of a --data-fraction subset); None: --seed. Fix it to train several seeds
    on the same folds (seed averaging, fair comparisons)."""
    data_fraction: float = 1.0
    """Use this fraction of the rows (stratified, seeded); a debug cap."""
    folds_from: str | None = None
    """Take every row's fold from this run folder's folds.csv (a teammate's run, or mlflow:<run-id>): the same
    validation rows, so that the runs can be blended and distilled without a leak (src.ensemble refuses runs on
    other folds)."""
    allow_different_folds: bool = setting(False, trains=False)
    """Train with a --teacher whose out-of-fold predictions come from other folds (refused by default: its models
    saw this run's valid rows, so the valid score leaks)."""

    def check(self) -> None:
        require("folds", self.folds, self.folds >= 2, "an integer >= 2")
        ok = self.fold == "all" or 0 <= self.fold < self.folds
        require("fold", self.fold, ok, f"0 <= fold < folds ({self.folds}) or all")
        require("data_fraction", self.data_fraction, 0.0 < self.data_fraction <= 1.0, "0 < data_fraction <= 1")


@dataclasses.dataclass
class LoaderConfig(Group):
    """Loading: image size, augmentation, normalisation, batches and workers."""

    img_size: int = 32
    """Side of the square model input, pixels. Images are resized to it."""
    img_size_schedule: SizeSchedule | None = None
    """Progressive resizing: 'SIZE:EPOCH,...' (e.g. '24:0,32:4,40:10') switches the train and valid image size
    (pixels) at the start of each listed epoch (0-based) without restarting; before the first entry --img-size
    applies."""
    resize_mode: Literal["resize", "pad"] = "resize"
    """'resize' scales every image to img_size; 'pad' zero-pads smaller images (centred) first."""
    aug: str = "light"
    """Train-time augmentation: a preset ('none', 'light', 'photo' = light + horizontal flips, 'medium', 'heavy')
    or an albumentations YAML/JSON file."""
    batch_aug: bool = True
    """Augment the train batch as a whole where the preset allows it ('none', 'light', 'photo': src.data.batch_augment;
    the workers resize and draw, the model's device warps and flips with albumentations' arithmetic; 8x cheaper than
    albumentations per 32 px image, same accuracy on 3 seeds: NOTES 2026-12-01). --no-batch-aug: per image in
    albumentations. Other presets and files are always per image."""
    batch_size: int | Literal["auto"] = 64
    """Micro-batch size (images per forward pass), over all processes: under torchrun each of N processes takes
    batch_size / N, so the update and the lr mean the same with any number of processes. 'auto' (CUDA): the largest
    batch that fits, found by doubling and bisecting trial passes of the model, less a 10% margin
    (src.training.batch_size); the run saves the number found."""
    eval_batch_size: int | None = setting(None, trains=False)
    """Images per evaluation batch, over all processes; None: 4 x --batch-size (with --batch-size auto, as many of
    those as an evaluation pass fits in GPU memory). Lowered, with a warning, when worker processes' batches in
    flight would not fit /dev/shm."""
    num_workers: int | None = setting(None, trains=False)
    """DataLoader worker processes; None: 0 on CPU (the cores are busier training), on CUDA every core this
    process may use (shared with the node's other processes) but one."""
    train_eval_size: int = 1000
    """Images of the train fold evaluated each epoch (a fixed, seeded subset); 0 evaluates all."""
    mean: Numbers | None = setting(None, inferred=True)
    """Per-channel normalisation mean (pixel / 255), comma-separated; None: computed on the train fold."""
    std: Numbers | None = setting(None, inferred=True)
    """Per-channel normalisation std (pixel / 255), comma-separated; None: computed on the train fold."""

    def check(self) -> None:
        self.img_size_schedule = parse_size_schedule(self.img_size_schedule)
        self.mean, self.std = parse_numbers("mean", self.mean), parse_numbers("std", self.std)
        require("img_size", self.img_size, self.img_size >= 8, "an integer >= 8 (pixels)")
        if isinstance(self.batch_size, str) and self.batch_size.isdigit():  # from a config file
            self.batch_size = int(self.batch_size)
        ok = self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1)
        require("batch_size", self.batch_size, ok, "an integer >= 1 or 'auto'")
        ok = self.eval_batch_size is None or self.eval_batch_size >= 1
        require("eval_batch_size", self.eval_batch_size, ok, "an integer >= 1 or None")
        ok = self.num_workers is None or self.num_workers >= 0
        require("num_workers", self.num_workers, ok, "an integer >= 0 or None")
        ok = self.train_eval_size >= 0
        require("train_eval_size", self.train_eval_size, ok, "an integer >= 0 (0 = the whole train fold)")
        require("std", self.std, not self.std or min(self.std) > 0, "positive values")

    @property
    def eval_batch(self) -> int:
        """--eval-batch-size, resolved: `EVAL_MULTIPLE` x --batch-size by default (an int once resolved)."""
        return self.eval_batch_size or EVAL_MULTIPLE * self.batch_size

    @property
    def size_schedule(self) -> list[tuple[int, int]]:
        """--img-size-schedule as (first epoch, size) pairs in epoch order, starting with (0, img_size) unless the
        schedule sets epoch 0 itself."""
        schedule = {0: self.img_size} | {epoch: size for size, epoch in self.img_size_schedule or ()}
        return sorted(schedule.items())

    def img_size_at(self, epoch: int) -> int:
        """The image side (pixels) of 0-based ``epoch`` under --img-size-schedule (--img-size without one)."""
        return [size for start, size in self.size_schedule if start <= epoch][-1]
