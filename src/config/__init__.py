"""The typed run configuration: one dataclass per concern, gathered in `Config`.

Each group checks its own fields in ``__post_init__`` and turns the comma-separated text of the command line
and of old config files into typed tuples there (``--label-col a,b`` -> ``("a", "b")``). The flags keep their
flat names (``--arch``, ``--accumulation-steps``): tyro omits the group prefixes and ``--help`` shows one
heading per group. A config file may use flat keys (every config file written before the groups existed)
or one mapping per group (what `save_config` writes). `src.cli.parse_config` fills a `Config` from the
defaults, ``--config FILE`` and the flags.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import json
import math
import re
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from tyro.constructors import PrimitiveConstructorSpec

from src.config import choices, typecheck
from src.metrics import get_metric
from src.utils import files


def _as_text(value: Any) -> list[str]:
    """How a tuple field's value is shown in ``--help``: comma-separated, as it is typed."""
    if isinstance(value, str):
        return [value]
    return [",".join(":".join(map(str, v)) if isinstance(v, tuple | list) else str(v) for v in value)]


def _comma_list(metavar: str) -> PrimitiveConstructorSpec:
    """One command-line word kept as text; the group's ``__post_init__`` turns it into a typed tuple."""
    return PrimitiveConstructorSpec(
        nargs=1,
        metavar=metavar,
        instance_from_str=lambda args: args[0],
        is_instance=lambda value: isinstance(value, str | tuple | list),
        str_from_instance=_as_text,
    )


Names = Annotated[tuple[str, ...], _comma_list("A,B,...")]
Numbers = Annotated[tuple[float, ...], _comma_list("X,Y,...")]
SizeSchedule = Annotated[tuple[tuple[int, int], ...], _comma_list("SIZE:EPOCH,...")]

_CHECKS_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar("config_checks_deferred", default=False)


@contextlib.contextmanager
def deferred_checks() -> Iterator[None]:
    """Builds groups without checking them, for `Config.checked` to check afterwards.

    tyro reports a ValueError raised while it builds a nested group in its own multi-line box and exits, which
    would bypass the one-line CLI error policy (`src.cli`); the parser builds the groups inside this block and
    checks the whole config after tyro has returned.
    """
    token = _CHECKS_DEFERRED.set(True)
    try:
        yield
    finally:
        _CHECKS_DEFERRED.reset(token)


def _require(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"--{name.replace('_', '-')} {value!r}: expected {expected}")


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float | None:
    """Seconds of a wall time written ``11h30m``, ``20m``, ``90s`` or ``1h``; None when ``text`` is not one."""
    match = _DURATION.fullmatch(str(text).strip().lower())
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return 3600 * hours + 60 * minutes + seconds


def _names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(str(part).strip() for part in parts if str(part).strip())


def _numbers(name: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in (_names(value) if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ValueError(f"--{name.replace('_', '-')} {value!r}: expected comma-separated numbers") from None


def _class_names(value: Any) -> tuple[str, ...] | None:
    """``--classes``: the lines of a file, or comma-separated names."""
    if isinstance(value, str) and Path(value).is_file():
        return tuple(line.strip() for line in Path(value).read_text().splitlines() if line.strip())
    return _names(value)


def parse_size_schedule(text: Any) -> tuple[tuple[int, int], ...] | None:
    """``--img-size-schedule`` 'SIZE:EPOCH,...' (or (size, epoch) pairs) as (size, epoch) pairs in the given order.

    Raises:
        ValueError: an entry that is not SIZE:EPOCH with SIZE >= 8 and EPOCH >= 0, or an epoch listed twice.
    """
    if text is None or text == "":
        return None
    entries = [e.split(":", 1) if ":" in e else [e, ""] for e in _names(text)] if isinstance(text, str) else text
    pairs, epochs = [], set()
    for entry in entries:
        size, epoch = (str(v).strip() for v in entry) if len(entry) == 2 else ("", "")
        if not (size.isdigit() and epoch.isdigit() and int(size) >= 8) or int(epoch) in epochs:
            raise ValueError(
                f"--img-size-schedule {_as_text(text)[0]!r}: bad entry {':'.join(map(str, entry))!r}; expected "
                "SIZE:EPOCH pairs with SIZE >= 8 pixels and distinct 0-based epochs, e.g. '24:0,32:4,40:10'"
            )
        epochs.add(int(epoch))
        pairs.append((int(size), int(epoch)))
    return tuple(pairs)


def format_duration(seconds: float) -> str:
    """``3h 02m``, ``12m 05s`` or ``42.0 s`` (the reverse of `parse_duration`, for people)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


EVAL_MULTIPLE = 4
"""Evaluation batches hold this many training batches by default: no gradients, no optimizer state."""
LOG_EVERY = {"cpu": 1, "cuda": 50}
"""``--log-every auto`` per device type: on a GPU each read of the loss waits for the device."""


@dataclasses.dataclass(frozen=True)
class Role:
    """What a config field is to a run, declared where the field is defined (`setting`). The rules on run folders
    are derived from the declarations (`RESUMABLE`, `INFERRED`, `FOLDER_FIELDS`, `EXPERIMENT`), never kept as
    lists of names.

    Attributes:
        trains: the field changes what the run learns, its numbers. False: where and how the run runs (device,
            workers, logging, checkpoints, tracking, the competition's files); a continued run may change it.
        resumable: a continued run may change the field; None: when it does not train. ``epochs`` trains and may
            change: a run goes on for more epochs.
        inferred: None until resolved from the data (``num_classes``, ``mean``): a continued run compares it only
            where both sides are resolved, and it is no setting of the experiment.
        folder: names the run folder or how to open it (``--run-name``, ``--resume``, ``--restart``): neither saved
            with the run nor compared.
    """

    trains: bool = True
    resumable: bool | None = None
    inferred: bool = False
    folder: bool = False

    def __post_init__(self) -> None:
        if self.resumable is None:
            object.__setattr__(self, "resumable", not self.trains)


def setting(default: Any, **role: bool) -> Any:
    """A field's default with its `Role` in the field's metadata: ``device: str = setting("auto", trains=False)``.
    A field declared without one trains, and a continued run must keep it."""
    return dataclasses.field(default=default, metadata={"role": Role(**role)})


class _Group:
    """A config group: ``__post_init__`` types and checks the fields unless `deferred_checks` is on."""

    def __post_init__(self) -> None:
        if not _CHECKS_DEFERRED.get():
            self.check()

    def check(self) -> None:
        """Types the text fields and checks the value ranges.

        Raises:
            ValueError: naming the flag, its value and what was expected.
        """


@dataclasses.dataclass
class ModelConfig(_Group):
    """Model: the architecture, its head and its regularisation."""

    arch: str = "effnet-b0"
    """Model architecture; `--list-archs` prints the known names."""
    pretrained: str | None = None
    """None (random init), 'imagenet' (the library's own download) or a path to a local state dict."""
    activation: str | None = None
    """Replace the model's ReLU/SiLU/Swish modules with this activation ('mish', 'relu', 'silu')."""
    num_classes: int | None = setting(None, inferred=True)
    """Number of classes; None infers it from the data."""
    in_chans: int | None = setting(None, inferred=True)
    """Input channels; None infers it from the data (1 for the bundled digits). The pixel-CSV and parquet layouts
    read this many values per pixel (1 when None)."""
    meta_features: int | None = setting(None, inferred=True)
    """Width of the encoded metadata (--meta-cols), set from the train fold; None or 0: images only."""
    hidden_size: int = 256
    """GRU state size of --arch gru (QuickDraw strokes)."""
    num_layers: int = 2
    """Stacked GRU layers of --arch gru."""
    drop_rate: float = 0.2
    """Dropout probability before the classifier layer."""
    head: Literal[choices.HEADS] = "linear"
    """Classifier head: 'linear' (dropout -> linear), 'bn-dropout' (BatchNorm -> dropout -> linear), or a margin
    head 'arcface' / 'cosface' (scaled cosine logits; the margin is applied in the training loss), or 'lsoftmax'
    (a bias-free linear layer; set by --loss lsoftmax)."""
    margin: float | None = None
    """Margin of an ArcFace head (degrees), a CosFace head (cosine) or L-softmax (the integer angle multiplier m,
    1..4); None: 28.6 degrees (0.5 rad), 0.35 and 4."""
    margin_scale: float = 30.0
    """Logit scale s of an ArcFace / CosFace head."""
    drop_path_rate: float = 0.2
    """Stochastic depth (drop connect) of EfficientNet blocks (Huang et al. 2016); other archs ignore it."""
    output_stride: Literal[choices.OUTPUT_STRIDES] = 32
    """Total downsampling of the backbone: 32 (the arch's own), or 16 / 8 to run the last one / two
    downsampling stages at stride 1, so small images keep a larger final map (EfficientNets, ResNet / SENet)."""

    def check(self) -> None:
        _require("num_classes", self.num_classes, self.num_classes is None or self.num_classes >= 2, ">= 2 or None")
        _require("in_chans", self.in_chans, self.in_chans is None or self.in_chans >= 1, "an integer >= 1 or None")
        _require("hidden_size", self.hidden_size, self.hidden_size >= 1, "an integer >= 1")
        _require("num_layers", self.num_layers, self.num_layers >= 1, "an integer >= 1")
        _require("drop_rate", self.drop_rate, 0.0 <= self.drop_rate < 1.0, "0 <= drop_rate < 1")
        _require("drop_path_rate", self.drop_path_rate, 0.0 <= self.drop_path_rate < 1.0, "0 <= drop_path_rate < 1")
        _require("margin", self.margin, self.margin is None or self.margin >= 0, "a margin >= 0 or None")
        _require("margin_scale", self.margin_scale, self.margin_scale > 0, "a positive float")


@dataclasses.dataclass
class DataConfig(_Group):
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
        self.channels, self.label_col = _names(self.channels), _names(self.label_col)
        self.meta_cols = _names(self.meta_cols) or None
        self.classes, self.head_weights = _class_names(self.classes), _numbers("head_weights", self.head_weights)
        for name in ("height", "width", "max_per_class"):
            value = getattr(self, name)
            _require(name, value, value is None or value >= 1, "an integer >= 1 or None")
        _require("max_strokes", self.max_strokes, self.max_strokes >= 1, "an integer >= 1")
        _require("max_stroke_length", self.max_stroke_length, self.max_stroke_length >= 1, "an integer >= 1")
        _require("label_col", self.label_col, bool(self.label_col), "one or more comma-separated column names")


@dataclasses.dataclass
class PseudoConfig(_Group):
    """Pseudo-labels: confident test predictions that join the training folds (`src.data.pseudo`)."""

    pseudo_labels: str | None = None
    """Test predictions (test_predictions.csv of src.predict) whose confident rows join the training folds."""
    pseudo_threshold: float = 0.95
    """Smallest top-class probability of a pseudo-labelled test image."""
    pseudo_test_csv: str | None = None
    """The test table of the pseudo-labelled images (same layout as the training data)."""
    pseudo_image_dir: str | None = None
    """Folder of the test images; None: --image-dir."""

    def check(self) -> None:
        ok = 0.0 <= self.pseudo_threshold <= 1.0
        _require("pseudo_threshold", self.pseudo_threshold, ok, "a probability in [0, 1]")


@dataclasses.dataclass
class DistillConfig(_Group):
    """Knowledge distillation: soft targets from a teacher's out-of-fold predictions (`src.data.distill`)."""

    teacher: str | None = None
    """A teacher: a --fold all run or an ensemble folder with oof.csv (and test_predictions.csv for
    --teacher-test). Each training row learns from the teacher's out-of-fold prediction of it."""
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
        _require("teacher_weight", weight, 0.0 <= weight <= 1.0, "a share in [0, 1]")
        _require("teacher_temperature", temperature, temperature > 0, "a positive temperature")


@dataclasses.dataclass
class SplitConfig(_Group):
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

    def check(self) -> None:
        _require("folds", self.folds, self.folds >= 2, "an integer >= 2")
        ok = self.fold == "all" or 0 <= self.fold < self.folds
        _require("fold", self.fold, ok, f"0 <= fold < folds ({self.folds}) or all")
        _require("data_fraction", self.data_fraction, 0.0 < self.data_fraction <= 1.0, "0 < data_fraction <= 1")


@dataclasses.dataclass
class LoaderConfig(_Group):
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
        self.mean, self.std = _numbers("mean", self.mean), _numbers("std", self.std)
        _require("img_size", self.img_size, self.img_size >= 8, "an integer >= 8 (pixels)")
        if isinstance(self.batch_size, str) and self.batch_size.isdigit():  # from a config file
            self.batch_size = int(self.batch_size)
        ok = self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1)
        _require("batch_size", self.batch_size, ok, "an integer >= 1 or 'auto'")
        ok = self.eval_batch_size is None or self.eval_batch_size >= 1
        _require("eval_batch_size", self.eval_batch_size, ok, "an integer >= 1 or None")
        ok = self.num_workers is None or self.num_workers >= 0
        _require("num_workers", self.num_workers, ok, "an integer >= 0 or None")
        ok = self.train_eval_size >= 0
        _require("train_eval_size", self.train_eval_size, ok, "an integer >= 0 (0 = the whole train fold)")
        _require("std", self.std, not self.std or min(self.std) > 0, "positive values")

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


@dataclasses.dataclass
class OptimConfig(_Group):
    """Optimisation: epochs, optimizer, learning rate and its schedule, fine-tuning."""

    epochs: int = setting(18, resumable=True)
    """Maximum number of epochs."""
    optimizer: Literal[choices.OPTIMIZERS] = "adamw"
    """Optimizer; no weight decay is applied to biases and normalisation weights."""
    lr: float = 4e-3
    """Peak learning rate."""
    weight_decay: float = 1e-2
    """Weight decay (decoupled for AdamW)."""
    freeze_epochs: int = 0
    """Train only the head for this many epochs (backbone frozen), then the whole model."""
    backbone_lr_mult: float = 1.0
    """The backbone's learning rate is lr x this (e.g. 0.1 when fine-tuning pretrained weights); every schedule
    keeps the ratio."""
    scheduler: Literal[choices.SCHEDULERS] = "onecycle"
    """LR schedule: linear one-cycle, cosine with linear warmup, step (/10 at 50% and 75%, after a warmup),
    reduce-on-plateau of the valid metric, none."""
    warmup_epochs: float = 1.0
    """Warmup length in epochs (a fraction allowed): the lr rises linearly from lr/25 to lr under 'onecycle',
    'cosine' and 'step'; 'plateau' and 'none' start at lr."""

    def check(self) -> None:
        _require("epochs", self.epochs, self.epochs >= 1, "an integer >= 1")
        _require("lr", self.lr, self.lr > 0, "a positive float")
        _require("weight_decay", self.weight_decay, self.weight_decay >= 0, "a float >= 0")
        ok = self.freeze_epochs >= 0
        _require("freeze_epochs", self.freeze_epochs, ok, "an integer >= 0 (0: no freezing)")
        ok = self.backbone_lr_mult > 0
        _require("backbone_lr_mult", self.backbone_lr_mult, ok, "a positive float (1: the head's lr)")
        _require("warmup_epochs", self.warmup_epochs, self.warmup_epochs >= 0, "a float >= 0")


@dataclasses.dataclass
class StepConfig(_Group):
    """The training step: gradient accumulation and clipping, mixed precision, memory format, compilation."""

    accumulation_steps: int = 1
    """Micro-batches per optimizer step; the update equals one batch of accumulation_steps x batch_size."""
    effective_batch_size: int | None = None
    """Images per optimizer step: sets --accumulation-steps to the nearest whole multiple of the batch size (with
    --batch-size auto, of the batch found). None: --accumulation-steps as given."""
    clip_grad_norm: float | None = None
    """Clip the global gradient L2 norm to this value before each optimizer step."""
    amp: Literal["auto", "none", "fp16", "bf16"] = "auto"
    """Automatic mixed precision: 'auto' (bf16 on a GPU that has it, else fp16; none on the CPU), 'fp16' (with a
    grad scaler, CUDA only), 'bf16' or 'none'."""
    channels_last: bool = True
    """Use the channels-last memory format (about 1.8x faster training on CPU for effnet-b0, see NOTES.md)."""
    compile: bool = False
    """torch.compile the training step's model, once per image size (the first steps compile; no gain on CPU, see
    NOTES.md); evaluation runs eagerly; recompilations are logged. Checkpoints hold the plain model's weights."""
    sync_bn: bool = False
    """With several processes (torchrun), BatchNorm layers normalise with the statistics of the global batch
    (SyncBatchNorm) instead of each process's share."""

    def check(self) -> None:
        ok = self.accumulation_steps >= 1
        _require("accumulation_steps", self.accumulation_steps, ok, "an integer >= 1")
        ok = self.effective_batch_size is None or self.effective_batch_size >= 1
        _require("effective_batch_size", self.effective_batch_size, ok, "an integer >= 1 or None")
        ok = self.clip_grad_norm is None or self.clip_grad_norm > 0
        _require("clip_grad_norm", self.clip_grad_norm, ok, "a positive float or None")


@dataclasses.dataclass
class LossConfig(_Group):
    """Loss: the criterion, label smoothing and the center loss."""

    loss: Literal[choices.LOSSES] = "ce"
    """Training loss: 'ce' (cross entropy; BCE for multi-label), 'focal' (Lin et al. 2017; sigmoid if multi-label),
    'soft_margin' (torch's MultiLabelSoftMarginLoss; multi-label only) or 'lsoftmax' (L-softmax, Liu et al. 2016:
    the angle multiplier --margin m of 1..4 (None: 4) on its own bias-free linear head; single-label only)."""
    lsoftmax_gamma: float = 1.0
    """L-softmax: the margin's weight 1 / (1 + lambda) anneals in with lambda = max(lambda_min, 1000 / (1 + gamma
    t)) at optimizer step t (the paper's schedule); 1.0 brings lambda to 1 by step 1,000."""
    lsoftmax_lambda_min: float = 0.0
    """L-softmax: the floor of lambda (0: the margin ends with its full weight)."""
    focal_gamma: float = 2.0
    """Focusing parameter of the focal loss (0 = cross entropy)."""
    center_loss: float = 0.0
    """Weight (lambda) of the center loss (Wen et al. 2016) added to the classification loss; 0 = off."""
    center_lr: float = 0.5
    """Step size (alpha) of the center loss's own SGD on the class centers."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy targets, with or without mixup."""

    def check(self) -> None:
        _require("focal_gamma", self.focal_gamma, self.focal_gamma >= 0, "a float >= 0")
        _require("lsoftmax_gamma", self.lsoftmax_gamma, self.lsoftmax_gamma >= 0, "a float >= 0")
        ok = self.lsoftmax_lambda_min >= 0
        _require("lsoftmax_lambda_min", self.lsoftmax_lambda_min, ok, "a float >= 0")
        _require("center_loss", self.center_loss, self.center_loss >= 0, "a weight >= 0 (0 = off)")
        _require("center_lr", self.center_lr, self.center_lr > 0, "a positive float")
        ok = 0.0 <= self.label_smoothing < 1.0
        _require("label_smoothing", self.label_smoothing, ok, "0 <= label_smoothing < 1")


@dataclasses.dataclass
class RegularisationConfig(_Group):
    """Regularisation: mixup, CutMix and weight averages (EMA, SWA)."""

    mixup_alpha: float = 0.0
    """Mixup concentration; 0 disables mixup. Weights ~ Beta(alpha, alpha) or Dirichlet(alpha * 1_k)."""
    mixup_k: int = 2
    """Samples mixed per image: 2 is Beta mixup (Zhang et al. 2018), k > 2 is Dirichlet k-way mixup."""
    mixup_at: Literal["input", "features"] = "input"
    """Where mixup mixes: the input images, or 'features': the hidden state after a stage of the backbone drawn
    uniformly per batch from the input and the stages before the last (manifold mixup, Verma et al. 2019); CNNs
    only."""
    cutmix_alpha: float = 0.0
    """CutMix concentration (Yun et al. 2019); 0 disables CutMix. A box of 1 - lam ~ Beta(alpha, alpha) of the
    image is pasted from another image, lam corrected to the box's area after clipping."""
    mix_prob: float = 1.0
    """Share of the batches mixed (mixup or CutMix), as timm's Mixup."""
    switch_prob: float = 0.5
    """With --mixup-alpha and --cutmix-alpha both > 0: share of the mixed batches that use CutMix, as timm's Mixup."""
    ema: float = 0.0
    """Decay per optimizer step of a moving average of the weights (e.g. 0.99); 0 = off. When on, the EMA model
    is validated alongside the trained one and picks the best checkpoint."""
    swa_start_epoch: int | None = None
    """Stochastic weight averaging from this epoch (1-based) on: the weights at the end of each epoch are
    averaged, BatchNorm statistics recomputed on the train-eval subset, and the average validated ('valid_swa') and
    saved as swa_model_<epoch>.pt. None = off."""

    def check(self) -> None:
        _require("mixup_alpha", self.mixup_alpha, self.mixup_alpha >= 0, "a float >= 0 (0 disables mixup)")
        _require("mixup_k", self.mixup_k, self.mixup_k >= 2, "an integer >= 2")
        ok = self.mixup_at == "input" or self.mixup_alpha > 0
        _require("mixup_at", self.mixup_at, ok, "'input' unless --mixup-alpha > 0 (manifold mixup mixes with it)")
        _require("cutmix_alpha", self.cutmix_alpha, self.cutmix_alpha >= 0, "a float >= 0 (0 disables CutMix)")
        ok = self.cutmix_alpha == 0 or self.mixup_k == 2
        _require("cutmix_alpha", self.cutmix_alpha, ok, "0 with --mixup-k > 2 (CutMix mixes two images)")
        _require("mix_prob", self.mix_prob, 0 <= self.mix_prob <= 1, "a share in [0, 1]")
        _require("switch_prob", self.switch_prob, 0 <= self.switch_prob <= 1, "a share in [0, 1]")
        _require("ema", self.ema, 0.0 <= self.ema < 1.0, "0 <= ema < 1 (0 turns EMA off)")
        ok = self.swa_start_epoch is None or self.swa_start_epoch >= 1
        _require("swa_start_epoch", self.swa_start_epoch, ok, "an epoch >= 1 or None")


@dataclasses.dataclass
class EvalConfig(_Group):
    """Evaluation: the competition metric, when to validate, early stopping."""

    metric: str = "accuracy"
    """The competition metric that selects the best checkpoint, drives early stopping and the plateau schedule:
    accuracy, top<k>, map@<k> (QuickDraw: map@3), macro_recall (Bengali.AI with 2:1:1 heads), f<beta>
    (multi-label, Planet: f2), roc_auc, qwk, log_loss (src/metrics.py)."""
    threshold: float = 0.5
    """Probability above which a tag is predicted (multi-label accuracy and f<beta>)."""
    val_every: float | None = None
    """Validate also inside epochs: a fraction of an epoch in (0, 1) (0.25: four times per epoch) or a whole
    number of optimizer steps (500); always after an optimizer step and at every epoch end. None: each epoch."""
    patience: int = 5
    """Early stopping: validations without improvement of the valid metric before stopping, counted from
    --early-stopping-start-epoch on."""
    early_stopping_start_epoch: int | None = None
    """Early stopping watches the validations from this epoch (1-based) on (Keras's start_from_epoch). None: from
    the first epoch for 'plateau', 'step' and 'none'; for 'onecycle' and 'cosine', whose lr anneals over the whole
    run and whose best epochs come at its end, from three quarters of the way between the warmup and the last
    epoch (epoch 14 of 18), so the noisy high-lr phase cannot end a run before it anneals."""

    def check(self) -> None:
        get_metric(self.metric)
        _require("threshold", self.threshold, 0.0 < self.threshold < 1.0, "a probability in (0, 1)")
        every = self.val_every
        ok = every is None or 0 < every < 1 or (every >= 1 and every == int(every))
        _require("val_every", every, ok, "a fraction of an epoch in (0, 1) or a whole number of optimizer steps")
        _require("patience", self.patience, self.patience >= 1, "an integer >= 1")
        start = self.early_stopping_start_epoch
        _require("early_stopping_start_epoch", start, start is None or start >= 1, "an epoch >= 1 or None (automatic)")


@dataclasses.dataclass
class TrackConfig(_Group):
    """Tracking: TensorBoard pictures, the notes log, notifications, MLflow. None of them changes the training."""

    pictures: bool = setting(True, trains=False)
    """TensorBoard pictures: augmented images at the start; at each validation the confusion matrix, per-class
    precision and recall, the most confidently wrong images (PR curves for multi-label tasks)."""
    top_losses: int = setting(16, trains=False)
    """How many of the valid images with the highest loss TensorBoard shows at each validation."""
    notes: bool = setting(True, trains=False)
    """Append an entry to the notes log when the run finishes, stops or crashes (--no-notes: do not)."""
    notes_file: str | None = setting(None, trains=False)
    """The notes log (Markdown); None: NOTES.md beside the run folder (<output-dir>/NOTES.md of a new run)."""
    note: str | None = setting(None, trains=False)
    """Your own words for the run's notes entry: the hypothesis it tests."""
    notify: Names | None = setting(None, trains=False)
    """Where to send a message when the run finishes, stops early or crashes: webhook URLs (Slack, Discord, ntfy:
    a JSON POST) and/or mailto:you@example.org (SMTP settings from SMTP_HOST, SMTP_PORT, SMTP_USER,
    SMTP_PASSWORD, SMTP_FROM, SMTP_STARTTLS)."""
    mlflow: str | None = setting(None, trains=False)
    """Log params, metrics per epoch and the summary to MLflow at this tracking URI (http://host:5000, or a local
    folder such as ./mlruns); needs `pip install mlflow`."""
    mlflow_experiment: str = setting("kaggle-trainer", trains=False)
    """The MLflow experiment the runs are logged under."""
    mlflow_artifacts: bool = setting(False, trains=False)
    """Also upload the best checkpoint and the valid predictions (oof.csv for --fold all) to MLflow."""

    def check(self) -> None:
        self.notify = _names(self.notify)
        _require("top_losses", self.top_losses, self.top_losses >= 0, "an integer >= 0")
        for target in self.notify or ():
            ok = target.startswith(("http://", "https://")) or bool(re.fullmatch(r"mailto:[^@\s]+@[^@\s]+", target))
            _require("notify", target, ok, "a webhook URL (http:// or https://) or mailto:name@host")


@dataclasses.dataclass
class RunConfig(_Group):
    """Run control: seed, run folder, resume, device, logging, debug caps."""

    seed: int = 42
    """Seed of the model init, the data order, augmentation and mixup, and of the folds unless --split-seed is set."""
    n_saved: int = setting(2, trains=False)
    """Number of best checkpoints (by the valid --metric) to keep."""
    resume: str | None = setting(None, trains=False, folder=True)
    """Continue a run from a `checkpoint_*.pt` file or from a run folder (its newest readable checkpoint); 'auto':
    the newest unfinished run in --output-dir with the same settings, or a new run. Running the same command with
    the same --run-name continues that run too."""
    restart: bool = setting(False, trains=False, folder=True)
    """Train the run folder named by --run-name (or --resume) over from scratch with this command's settings: its
    earlier files are first moved aside, whole, to '<run>.before-restart-<timestamp>' beside it (nothing is
    deleted), and its config.yaml is not read. Without --restart an existing run folder is only ever continued,
    and a damaged one stops the command."""
    checkpoint_every: str = setting("10m", trains=False)
    """Save the training state inside epochs too: every this many optimizer steps ('500') or this much wall time
    ('20m', '1h', '90s'); 'epoch' saves at epoch ends only. A kill loses at most this much training."""
    time_limit: str | None = setting(None, trains=False)
    """Stop cleanly before this much wall time has passed since the start ('11h30m' for Kaggle's 12-hour
    sessions), keeping a margin for the last validation and the save; the same command continues the run."""
    time_budget: str | None = setting(None, trains=False)
    """--fold all: plan the folds to fit this much wall time ('9h'): fold 0 measures the pace, the later folds get
    fewer epochs (down to half) or are left out when they would not fit (`src.training.budget`); --time-limit stays the
    hard stop."""
    output_dir: str = setting("experiments", trains=False)
    """Parent folder of the run folders."""
    run_name: str | None = setting(None, trains=False, folder=True)
    """Run folder name under output_dir; None makes '<arch>-fold<fold>-<timestamp>'."""
    device: str = setting("auto", trains=False)
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    log_every: int | Literal["auto"] = setting("auto", trains=False)
    """Read the training loss every this many iterations: TensorBoard's loss and lr, the progress bar, the stop on a
    NaN loss. Each read waits for the GPU. 'auto': every iteration on the CPU, every 50 on CUDA."""
    max_iters_per_epoch: int | None = None
    """Debug cap on the training iterations per epoch."""
    dry_run: bool = setting(False, trains=False)
    """Check a config in seconds: 1% of the data (at least one batch), one epoch, no files written. Also DRY_RUN=1."""
    progress: bool = setting(True, trains=False)
    """Show the progress: a bar on a terminal; in a file (SLURM, nohup) a line at most every 30 seconds and one per
    epoch."""
    list_archs: bool = setting(False, trains=False)
    """Print the known architectures and exit."""

    def check(self) -> None:
        _require("n_saved", self.n_saved, self.n_saved >= 1, "an integer >= 1")
        if self.restart and self.resume == "auto":
            raise ValueError("--restart with --resume auto: name the run to train over (--run-name or --resume RUN)")
        if isinstance(self.log_every, str) and self.log_every.isdigit():  # from a config file
            self.log_every = int(self.log_every)
        ok = self.log_every == "auto" or (isinstance(self.log_every, int) and self.log_every >= 1)
        _require("log_every", self.log_every, ok, "an integer >= 1 or 'auto'")
        cap = self.max_iters_per_epoch
        _require("max_iters_per_epoch", cap, cap is None or cap >= 1, "an integer >= 1 or None")
        every = self.checkpoint_every
        ok = every == "epoch" or (every.isdigit() and int(every) >= 1) or bool(parse_duration(every))
        _require("checkpoint_every", every, ok, "optimizer steps (500), a wall time (20m, 1h, 90s) or 'epoch'")
        for name in ("time_limit", "time_budget"):
            value = getattr(self, name)
            ok = value is None or bool(parse_duration(value))
            _require(name, value, ok, "a wall time such as 11h30m, 45m or 600s")

    @property
    def checkpoint_steps(self) -> int | None:
        """``--checkpoint-every`` in optimizer steps, or None."""
        return int(self.checkpoint_every) if self.checkpoint_every.isdigit() else None

    @property
    def checkpoint_seconds(self) -> float | None:
        """``--checkpoint-every`` as wall time in seconds, or None."""
        return None if self.checkpoint_every == "epoch" else parse_duration(self.checkpoint_every)

    @property
    def time_limit_s(self) -> float | None:
        """``--time-limit`` in seconds, or None."""
        return parse_duration(self.time_limit) if self.time_limit else None


@dataclasses.dataclass
class CompetitionConfig(_Group):
    """Competition: where the data came from, its test set and its submission (README "From Kaggle and back").

    `python -m src.kaggle inspect` writes these into the folder's ``train.yaml``; they travel in the run's config,
    so ``src.predict --run R`` predicts the competition's test set without flags and ``src.kaggle submit`` and
    ``bundle`` know the competition. They never change how a model trains.
    """

    competition: str | None = setting(None, trains=False)
    """The Kaggle competition's name, as in its URL (kaggle.com/competitions/<name>)."""
    data_root: str | None = setting(None, trains=False)
    """The competition's folder; the offline bundle finds the test files at the same place under its input."""
    test_csv: str | None = setting(None, trains=False)
    """The test table (ids); src.predict's default --test-csv."""
    test_image_dir: str | None = setting(None, trains=False)
    """Folder of the test images (layout 'images'); src.predict's default --image-dir."""
    test_parquet: str | None = setting(None, trains=False)
    """Parquet file(s) of the test images (layout 'parquet'); src.predict's default --parquet."""
    sample_submission: str | None = setting(None, trains=False)
    """The competition's sample submission; src.predict's default --sample-submission."""
    submission_format: Literal["label", "topk", "tags", "long", "probs"] | None = setting(None, trains=False)
    """src.predict's default --submission-format (None: by the task)."""


@dataclasses.dataclass
class Config:
    """Train an image classifier. Flags override `--config FILE` (YAML or JSON), which overrides defaults."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    pseudo: PseudoConfig = dataclasses.field(default_factory=PseudoConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    loader: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    step: StepConfig = dataclasses.field(default_factory=StepConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    regularisation: RegularisationConfig = dataclasses.field(default_factory=RegularisationConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    competition: CompetitionConfig = dataclasses.field(default_factory=CompetitionConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    @classmethod
    def of(cls, **fields: Any) -> Config:
        """A config from flat field names, as the flags spell them: ``Config.of(arch="effnet-b2", lr=1e-3)``.

        Raises:
            ValueError: an unknown field or a bad value.
        """
        return config_from_dict(fields)

    def replace(self, **fields: Any) -> Config:
        """A copy with the given fields (flat names, as the flags) changed; the groups are checked again.

        Raises:
            ValueError: an unknown field or a bad value.
        """
        changes: dict[str, dict[str, Any]] = {}
        for name, value in fields.items():
            changes.setdefault(_group_of(name, "Config.replace"), {})[name] = value
        return dataclasses.replace(
            self, **{group: dataclasses.replace(getattr(self, group), **values) for group, values in changes.items()}
        )

    def checked(self) -> Config:
        """Types and checks every group (after `deferred_checks`); returns the config itself.

        Raises:
            ValueError: the first bad value, naming its flag.
        """
        for group in GROUPS:
            getattr(self, group).check()
        return self

    def flat(self) -> dict[str, Any]:
        """Every field by its flat name (as the flags spell it), in group order."""
        return {name: value for group in self.to_dict().values() for name, value in group.items()}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """One mapping per group, tuples as lists (YAML- and JSON-safe)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def early_stopping_start(self) -> int:
        """--early-stopping-start-epoch, resolved: the first epoch (1-based) whose validations early stopping sees."""
        if self.eval.early_stopping_start_epoch is not None:
            return self.eval.early_stopping_start_epoch
        optim = self.optim
        if optim.scheduler in choices.ANNEALING_SCHEDULERS:  # the last quarter of the decay from the peak
            return max(1, math.ceil(optim.warmup_epochs + 0.75 * (optim.epochs - optim.warmup_epochs)))
        return 1

    @property
    def split_seed(self) -> int:
        """The seed of the fold assignment: --split-seed, or else --seed."""
        return self.run.seed if self.split.split_seed is None else self.split.split_seed


GROUPS: dict[str, type[_Group]] = {field.name: field.default_factory for field in dataclasses.fields(Config)}
FIELD_GROUPS: dict[str, str] = {field.name: group for group, cls in GROUPS.items() for field in dataclasses.fields(cls)}
FIELD_TYPES: dict[str, Any] = {
    name: hint for cls in GROUPS.values() for name, hint in typing.get_type_hints(cls, include_extras=True).items()
}
ROLES: dict[str, Role] = {
    field.name: field.metadata.get("role", Role()) for cls in GROUPS.values() for field in dataclasses.fields(cls)
}
RESUMABLE = frozenset(name for name, role in ROLES.items() if role.resumable)
"""The fields a command that continues a run folder may change: where and how it runs, and ``epochs``."""
INFERRED = frozenset(name for name, role in ROLES.items() if role.inferred)
"""The fields left None until resolved from the data."""
FOLDER_FIELDS = frozenset(name for name, role in ROLES.items() if role.folder)
"""The fields that name the run folder or how to open it: never saved with the run."""
EXPERIMENT = frozenset(name for name, role in ROLES.items() if role.trains and not role.inferred)
"""The settings that make a run another experiment: what it learns, but for what the data decides."""


def _group_of(name: str, where: str) -> str:
    if name not in FIELD_GROUPS:
        near = difflib.get_close_matches(name, FIELD_GROUPS, n=1)
        hint = (
            f"did you mean {near[0]!r}?"
            if near
            else "the keys are the flags' names with '_' (python -m src.train --help)"
        )
        raise ValueError(f"{where}: unknown config key {name!r}; {hint}")
    return FIELD_GROUPS[name]


def config_from_dict(values: dict[str, Any], where: str = "config", typed: bool = False) -> Config:
    """A config from a mapping of flat keys (``lr: 0.01``), of groups (``optim: {lr: 0.01}``), or both.

    Args:
        values: the mapping.
        where: what the errors name (a file).
        typed: check each value against its field's type first (`src.config.typecheck.conform`), as for a file's values.

    Raises:
        ValueError: an unknown key or group field (the message lists the known keys), a value of the wrong type
            (naming the key, the value and the type expected), or a bad value.
    """
    groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
    for key, value in values.items():
        if key in GROUPS and isinstance(value, dict):
            for name, field_value in value.items():
                if _group_of(name, where) != key:
                    raise ValueError(f"{where}: {name!r} is a key of group {FIELD_GROUPS[name]!r}, not of {key!r}")
                groups[key][name] = field_value
        else:
            groups[_group_of(key, where)][key] = value
    if typed:
        for fields in groups.values():
            for name, value in fields.items():
                try:
                    fields[name] = typecheck.conform(value, FIELD_TYPES[name])
                except typecheck.WrongType as expected:
                    raise ValueError(f"{where}: key {name!r} = {value!r}: expected {expected}") from None
    return Config(**{name: GROUPS[name](**fields) for name, fields in groups.items()})


OLD_RUN_DEFAULTS: dict[str, Any] = {"batch_aug": False}
"""Fields whose default changed, with the value runs saved before the change trained with: a run folder's
``config.yaml`` without the key resumes as it started (`--batch-aug` became the default on 2026-12-01)."""


def load_config_file(path: str | Path, missing: Mapping[str, Any] | None = None, saved: bool = False) -> Config:
    """Reads a YAML or JSON config file: flat keys (every file written before the groups), groups, or both.

    Args:
        path: the file.
        missing: values (flat names) for the keys the file does not hold, instead of the defaults; a run
            folder's saved config is read with `OLD_RUN_DEFAULTS`.
        saved: the file is a run's own, written whole by `save_config`: one cut short is refused (`check_whole`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid YAML/JSON or not a mapping, is cut short (``saved``), has keys that are
            not config fields (the nearest known key is suggested), or holds a value of the wrong type (naming the
            key, the value and the type expected) or a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}{where}: {problem}"
        ) from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(values).__name__}")
    if saved:
        check_whole(values, path, len(text.splitlines()))
    for name, value in (missing or {}).items():
        group = values.get(FIELD_GROUPS[name])
        if name not in values and not (isinstance(group, dict) and name in group):
            values[name] = value
    return config_from_dict(values, str(path), typed=True)


def check_whole(values: Mapping[str, Any], path: Path, lines: int) -> None:
    """Checks that a run's saved config (grouped, as `save_config` writes it) is not cut short: `save_config`
    writes the groups in `Config`'s order, ``run`` last with ``list_archs`` its last key, so a file cut anywhere
    lacks that key. (Keep ``list_archs`` last in `RunConfig`: every grouped config saved so far ends with it.) A
    file of flat keys, written before the groups, cannot be checked.

    Raises:
        ValueError: the file lacks the last group or its last key, naming what is missing.
    """
    if not any(isinstance(values.get(name), dict) for name in GROUPS):  # "loss", "competition": fields too
        return
    last_group = list(GROUPS)[-1]
    last_key = dataclasses.fields(GROUPS[last_group])[-1].name
    group = values.get(last_group)
    if isinstance(group, dict) and last_key in group:
        return
    absent = [name for name in GROUPS if not isinstance(values.get(name), dict)]
    lacks = f"the groups {', '.join(absent)}" if len(absent) > 1 else f"the key {last_group}.{last_key}"
    raise ValueError(f"{path}: cut short: it ends at line {lines} without {lacks} (a damaged run folder)")


def save_config(config: Config, path: str | Path) -> None:
    """Writes the config as YAML, one mapping per group: enough to repeat the run with ``--config path``."""
    files.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
