"""The typed run configuration: one dataclass filled from defaults, a YAML/JSON file and CLI flags.

Precedence, lowest first: the dataclass defaults, ``--config FILE`` (or, with ``--resume``, the run
folder's saved ``config.yaml``), then the CLI flags. `tyro` builds the CLI from the dataclass, so
``python -m src.train --help`` lists every field below with its doc string.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import tyro
import yaml

from src.metrics import get_metric

CONFIG_FILENAME = "config.yaml"
T = TypeVar("T")


@dataclasses.dataclass
class Config:
    """Train an image classifier. Flags override `--config FILE` (YAML or JSON), which overrides defaults."""

    # --- model -------------------------------------------------------------------------------
    arch: str = "effnet-b0"
    """Model architecture; `--list-archs` prints the known names."""
    pretrained: str | None = None
    """None (random init), 'imagenet' (the library's own download) or a path to a local state dict."""
    activation: str | None = None
    """Replace the model's ReLU/SiLU/Swish modules with this activation ('mish', 'relu', 'silu')."""
    num_classes: int | None = None
    """Number of classes; None infers it from the data."""
    in_chans: int | None = None
    """Input channels; None infers it from the data (1 for the bundled digits). The pixel-CSV and parquet layouts
    read this many values per pixel (default 1)."""
    hidden_size: int = 256
    """GRU state size of --arch gru (QuickDraw strokes)."""
    num_layers: int = 2
    """Stacked GRU layers of --arch gru."""
    max_strokes: int = 20
    """--arch gru reads the first this many strokes of each drawing."""
    max_stroke_length: int = 32
    """--arch gru reads the first this many points of each stroke."""
    drop_rate: float = 0.2
    """Dropout before the classifier layer."""
    head: Literal["linear", "bn-dropout", "arcface", "cosface"] = "linear"
    """Classifier head: 'linear' (dropout -> linear), 'bn-dropout' (BatchNorm -> dropout -> linear), or a margin
    head 'arcface' / 'cosface' (scaled cosine logits; the margin is applied in the training loss)."""
    margin: float | None = None
    """Margin of an ArcFace head (degrees, default 28.6 = 0.5 rad) or CosFace head (cosine, default 0.35)."""
    margin_scale: float = 30.0
    """Logit scale s of an ArcFace / CosFace head."""
    drop_path_rate: float = 0.2
    """Stochastic depth (drop connect) of EfficientNet blocks (Huang et al. 2016); other archs ignore it."""
    output_stride: Literal[8, 16, 32] = 32
    """Total downsampling of the backbone: 32 (the arch's own), or 16 / 8 to run the last one / two
    downsampling stages at stride 1, so small images keep a larger final map (EfficientNets, ResNet / SENet)."""

    # --- data: layout and targets (README "Bring your own data") -----------------------------
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
    channels: str | None = None
    """Comma-separated values of the {channel} field, e.g. '1,2,3,4,5,6' (Recursion: 6 files per image)."""
    grayscale: bool = False
    """Convert colour image files to one channel."""
    parquet: str | None = None
    """Parquet file(s) (path or glob) of flattened images: --id-col plus height x width pixel columns."""
    height: int | None = None
    """Image height of the pixel-CSV and parquet layouts (None: square)."""
    width: int | None = None
    """Image width of the pixel-CSV and parquet layouts (None: square)."""
    max_per_class: int | None = None
    """Read at most this many rows per class (QuickDraw)."""
    id_col: str = "id"
    """Column of sample ids (file names for --image-template's {id})."""
    label_col: str = "label"
    """Label column; several comma-separated columns train one head each (Bengali.AI: 3 heads)."""
    multilabel: bool = False
    """The label column holds space-separated tags (Planet): multi-hot targets, BCE loss."""
    classes: str | None = None
    """The class list, comma-separated or a file with one class per line; None: the labels seen in training."""
    head_weights: str | None = None
    """Loss weight per label column, comma-separated (Bengali.AI: '2,1,1')."""
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
    mean: str | None = None
    """Per-channel normalisation mean (pixel / 255), comma-separated; None: computed on the train fold."""
    std: str | None = None
    """Per-channel normalisation std (pixel / 255), comma-separated; None: computed on the train fold."""

    # --- data: folds, size, augmentation, loading ------------------------------------------------
    img_size: int = 32
    """Side of the square model input, pixels. Images are resized to it."""
    img_size_schedule: str | None = None
    """Progressive resizing: 'SIZE:EPOCH,...' (e.g. '24:0,32:4,40:10') switches the train and valid image size
    at the start of each listed epoch (0-based) without restarting; before the first entry --img-size applies."""
    resize_mode: Literal["resize", "pad"] = "resize"
    """'resize' scales every image to img_size; 'pad' zero-pads smaller images (centred) first."""
    folds: int = 5
    """Number of stratified folds."""
    fold: int | Literal["all"] = 0
    """Validation fold, 0 <= fold < folds, or 'all': every fold in turn (sub-folders fold<k>), then the out-of-fold
    predictions (oof.csv) and the CV score."""
    aug: str = "light"
    """Train-time augmentation: a preset ('none', 'light', 'medium', 'heavy') or an albumentations YAML/JSON file."""
    batch_size: int = 64
    """Micro-batch size (images per forward pass)."""
    num_workers: int | None = None
    """DataLoader worker processes; None: 0 on CPU (the cores are busier training), min(8, cores) on CUDA."""
    train_eval_size: int = 1000
    """Images of the train fold evaluated each epoch (a fixed, seeded subset); 0 evaluates all."""
    data_fraction: float = 1.0
    """Use this fraction of the rows (stratified, seeded); a debug cap."""

    pseudo_labels: str | None = None
    """Test predictions (test_predictions.csv of src.predict) whose confident rows join the training folds."""
    pseudo_threshold: float = 0.95
    """Smallest top-class probability of a pseudo-labelled test image."""
    pseudo_test_csv: str | None = None
    """The test table of the pseudo-labelled images (same layout as the training data)."""
    pseudo_image_dir: str | None = None
    """Folder of the test images; None: --image-dir."""

    # --- optimisation ------------------------------------------------------------------------
    epochs: int = 18
    """Maximum number of epochs."""
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
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
    scheduler: Literal["onecycle", "cosine", "step", "plateau", "none"] = "onecycle"
    """LR schedule: linear one-cycle, cosine with linear warmup, step (/10 at 50% and 75%, after a warmup),
    reduce-on-plateau of the valid metric, none."""
    warmup_epochs: float = 1.0
    """Warmup length in epochs for 'onecycle' and 'cosine'."""
    accumulation_steps: int = 1
    """Micro-batches per optimizer step; the update equals one batch of accumulation_steps x batch_size."""
    clip_grad_norm: float | None = None
    """Clip the global gradient L2 norm to this value before each optimizer step."""
    amp: Literal["none", "fp16", "bf16"] = "none"
    """Automatic mixed precision: 'fp16' (with a grad scaler, CUDA only) or 'bf16'."""
    channels_last: bool = True
    """Use the channels-last memory format (about 1.8x faster training on CPU for effnet-b0, see NOTES.md)."""
    compile: bool = False
    """torch.compile the model for training and evaluation (the first steps compile; no gain on CPU, see NOTES.md).
    Checkpoints hold the plain model's weights."""
    loss: Literal["ce", "focal"] = "ce"
    """Training loss: 'ce' (cross entropy; BCE for multi-label) or 'focal' (Lin et al. 2017; sigmoid if multi-label)."""
    focal_gamma: float = 2.0
    """Focusing parameter of the focal loss (0 = cross entropy)."""
    center_loss: float = 0.0
    """Weight (lambda) of the center loss (Wen et al. 2016) added to the classification loss; 0 = off."""
    center_lr: float = 0.5
    """Step size (alpha) of the center loss's own SGD on the class centers."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy targets, with or without mixup."""
    mixup_alpha: float = 0.0
    """Mixup concentration; 0 disables mixup. Weights ~ Beta(alpha, alpha) or Dirichlet(alpha * 1_k)."""
    mixup_k: int = 2
    """Samples mixed per image: 2 is Beta mixup (Zhang et al. 2018), k > 2 is Dirichlet k-way mixup."""
    ema: float = 0.0
    """Decay per optimizer step of a moving average of the weights (e.g. 0.99); 0 = off. When on, the EMA model
    is validated alongside the trained one and picks the best checkpoint."""
    swa_start_epoch: int | None = None
    """Stochastic weight averaging from this epoch (1-based) on: the weights at the end of each epoch are
    averaged, BatchNorm statistics recomputed on the train-eval subset, and the average validated ('valid_swa') and
    saved as swa_model_<epoch>.pt. None = off."""

    metric: str = "accuracy"
    """The competition metric that selects the best checkpoint, drives early stopping and the plateau schedule:
    accuracy, top<k>, map@<k> (QuickDraw: map@3), macro_recall (Bengali.AI with 2:1:1 heads), f<beta>
    (multi-label, Planet: f2), roc_auc, qwk, log_loss (src/metrics.py)."""
    threshold: float = 0.5
    """Probability above which a tag is predicted (multi-label accuracy and f<beta>)."""

    # --- run control -------------------------------------------------------------------------
    seed: int = 42
    """Seed of the model init, the data order, augmentation and mixup, and of the folds unless --split-seed is set."""
    split_seed: int | None = None
    """Seed of the fold assignment (and of a --data-fraction subset); None: --seed. Fix it to train several seeds
    on the same folds (seed averaging, fair comparisons)."""
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
    n_saved: int = 2
    """Number of best checkpoints (by valid accuracy) to keep."""
    resume: str | None = None
    """Continue a run from a `checkpoint_*.pt` file or from a run folder (its newest checkpoint)."""
    output_dir: str = "experiments"
    """Parent folder of the run folders."""
    run_name: str | None = None
    """Run folder name under output_dir; None makes '<arch>-fold<fold>-<timestamp>'."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    log_every: int = 1
    """Log the training loss and lr to TensorBoard every this many iterations."""
    max_iters_per_epoch: int | None = None
    """Debug cap on the training iterations per epoch."""
    dry_run: bool = False
    """Check a config in seconds: 1% of the data (at least one batch), one epoch, no files written. Also DRY_RUN=1."""
    progress: bool = True
    """Show a progress bar."""
    list_archs: bool = False
    """Print the known architectures and exit."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def label_cols(self) -> list[str]:
        return _split(self.label_col)

    @property
    def class_list(self) -> list[str] | None:
        """--classes as a list: the lines of a file, or the comma-separated names."""
        if not self.classes:
            return None
        path = Path(self.classes)
        if path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return _split(self.classes)

    @property
    def head_weight_list(self) -> list[float] | None:
        return _floats("head_weights", self.head_weights)

    @property
    def size_schedule(self) -> list[tuple[int, int]]:
        """--img-size-schedule as (first epoch, size) pairs in epoch order, starting with (0, img_size)."""
        return parse_size_schedule(self.img_size_schedule, self.img_size)

    def img_size_at(self, epoch: int) -> int:
        """The image side (pixels) of 0-based ``epoch`` under --img-size-schedule (--img-size without one)."""
        return [size for start, size in self.size_schedule if start <= epoch][-1]

    @property
    def early_stopping_start(self) -> int:
        """--early-stopping-start-epoch, resolved: the first epoch (1-based) whose validations early stopping sees."""
        if self.early_stopping_start_epoch is not None:
            return self.early_stopping_start_epoch
        if self.scheduler in ("onecycle", "cosine"):  # the last quarter of the decay from the peak
            return max(1, math.ceil(self.warmup_epochs + 0.75 * (self.epochs - self.warmup_epochs)))
        return 1

    @property
    def mean_list(self) -> list[float] | None:
        return _floats("mean", self.mean)

    @property
    def std_list(self) -> list[float] | None:
        return _floats("std", self.std)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_size_schedule(text: str | None, img_size: int) -> list[tuple[int, int]]:
    """Parses 'SIZE:EPOCH,...' into (first epoch, size) pairs sorted by epoch, starting with (0, img_size)
    unless the text sets epoch 0 itself.

    Raises:
        ValueError: an entry that is not SIZE:EPOCH with SIZE >= 8 and EPOCH >= 0, or an epoch listed twice.
    """
    schedule = {0: img_size}
    if not text:
        return list(schedule.items())
    listed = set()
    for entry in _split(str(text)):
        size, _, epoch = entry.partition(":")
        if not (size.strip().isdigit() and epoch.strip().isdigit() and int(size) >= 8) or int(epoch) in listed:
            raise ValueError(
                f"--img-size-schedule {text!r}: bad entry {entry!r}; expected SIZE:EPOCH pairs with SIZE >= 8 pixels "
                "and distinct 0-based epochs, e.g. '24:0,32:4,40:10'"
            )
        listed.add(int(epoch))
        schedule[int(epoch)] = int(size)
    return sorted(schedule.items())


def _floats(name: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in _split(str(text))]
    except ValueError:
        raise ValueError(f"--{name.replace('_', '-')} {text!r}: expected comma-separated numbers") from None


def load_config_file(path: str | Path) -> Config:
    """Reads a YAML or JSON config file.

    Args:
        path: ``.yaml``/``.yml`` or ``.json`` file whose keys are `Config` field names.

    Returns:
        The config with the file's values over the defaults.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a mapping or has keys that are not config fields.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}; known keys: {sorted(known)}")
    return Config(**values)


def save_config(config: Config, path: str | Path) -> None:
    """Writes the resolved config as YAML, enough to repeat the run with ``--config path``."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def parse_config(argv: Sequence[str] | None = None, environ: dict | None = None) -> Config:
    """Builds the run config from defaults, an optional config file and CLI flags.

    ``--config FILE`` sets the defaults; ``--resume RUN`` without ``--config`` takes the run folder's
    saved ``config.yaml`` as the defaults. ``DRY_RUN=1`` in the environment turns on ``dry_run``.

    Args:
        argv: CLI arguments without the program name; None reads ``sys.argv``.
        environ: environment mapping; None reads ``os.environ``.

    Returns:
        The validated config.

    Raises:
        ValueError: a value is out of range (see `validate`).
        FileNotFoundError: the config file does not exist.
    """
    environ = os.environ if environ is None else environ
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--resume")
    known, rest = pre.parse_known_args(argv)
    if known.config:
        default = load_config_file(known.config)
    elif known.resume and (resolve_run_dir(known.resume) / CONFIG_FILENAME).is_file():
        default = load_config_file(resolve_run_dir(known.resume) / CONFIG_FILENAME)
    else:
        default = Config()
    if known.resume:
        rest = [*rest, "--resume", known.resume]
    config = tyro.cli(Config, args=rest, default=default)
    if environ.get("DRY_RUN", "").strip().lower() in ("1", "true", "yes"):
        config.dry_run = True
    validate(config)
    return config


def run_cli(command: Callable[[T], object], config_class: type[T], argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` into ``config_class`` (tyro) and runs ``command`` on it; bad input (ValueError,
    FileNotFoundError) prints ``error: <message>`` and returns exit code 2, success 0."""
    try:
        command(tyro.cli(config_class, args=argv))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def resolve_run_dir(resume: str | Path) -> Path:
    """The run folder of a ``--resume`` value: the folder itself or a checkpoint file's parent."""
    path = Path(resume)
    return path.parent if path.is_file() else path


def validate(config: Config) -> None:
    """Checks value ranges that the types alone do not.

    Raises:
        ValueError: naming the field, its value and what was expected.
    """
    checks = [
        ("folds", config.folds >= 2, "an integer >= 2"),
        ("fold", config.fold == "all" or 0 <= config.fold < config.folds, f"0 <= fold < folds ({config.folds}) or all"),
        ("batch_size", config.batch_size >= 1, "an integer >= 1"),
        ("epochs", config.epochs >= 1, "an integer >= 1"),
        ("img_size", config.img_size >= 8, "an integer >= 8 (pixels)"),
        ("lr", config.lr > 0, "a positive float"),
        ("weight_decay", config.weight_decay >= 0, "a float >= 0"),
        ("freeze_epochs", config.freeze_epochs >= 0, "an integer >= 0 (0: no freezing)"),
        ("backbone_lr_mult", config.backbone_lr_mult > 0, "a positive float (1: the head's lr)"),
        ("accumulation_steps", config.accumulation_steps >= 1, "an integer >= 1"),
        ("label_smoothing", 0.0 <= config.label_smoothing < 1.0, "0 <= label_smoothing < 1"),
        ("mixup_alpha", config.mixup_alpha >= 0, "a float >= 0 (0 disables mixup)"),
        ("mixup_k", config.mixup_k >= 2, "an integer >= 2"),
        ("focal_gamma", config.focal_gamma >= 0, "a float >= 0"),
        ("ema", 0.0 <= config.ema < 1.0, "0 <= ema < 1 (0 turns EMA off)"),
        ("patience", config.patience >= 1, "an integer >= 1"),
        (
            "early_stopping_start_epoch",
            config.early_stopping_start_epoch is None or config.early_stopping_start_epoch >= 1,
            "an epoch >= 1 or None (automatic)",
        ),
        ("swa_start_epoch", config.swa_start_epoch is None or config.swa_start_epoch >= 1, "an epoch >= 1 or None"),
        (
            "val_every",
            config.val_every is None
            or 0 < config.val_every < 1
            or (config.val_every >= 1 and config.val_every == int(config.val_every)),
            "a fraction of an epoch in (0, 1) or a whole number of optimizer steps",
        ),
        ("n_saved", config.n_saved >= 1, "an integer >= 1"),
        ("num_workers", config.num_workers is None or config.num_workers >= 0, "an integer >= 0 or None"),
        ("data_fraction", 0.0 < config.data_fraction <= 1.0, "0 < data_fraction <= 1"),
        ("train_eval_size", config.train_eval_size >= 0, "an integer >= 0 (0 = the whole train fold)"),
        ("warmup_epochs", config.warmup_epochs >= 0, "a float >= 0"),
        ("drop_rate", 0.0 <= config.drop_rate < 1.0, "0 <= drop_rate < 1"),
        ("margin", config.margin is None or config.margin >= 0, "a margin >= 0 or None (the head's default)"),
        ("margin_scale", config.margin_scale > 0, "a positive float"),
        ("center_loss", config.center_loss >= 0, "a weight >= 0 (0 = off)"),
        ("threshold", 0.0 < config.threshold < 1.0, "a probability in (0, 1)"),
        ("pseudo_threshold", 0.0 <= config.pseudo_threshold <= 1.0, "a probability in [0, 1]"),
        ("hidden_size", config.hidden_size >= 1, "an integer >= 1"),
        ("num_layers", config.num_layers >= 1, "an integer >= 1"),
        ("max_strokes", config.max_strokes >= 1, "an integer >= 1"),
        ("max_stroke_length", config.max_stroke_length >= 1, "an integer >= 1"),
        ("center_lr", config.center_lr > 0, "a positive float"),
        ("drop_path_rate", 0.0 <= config.drop_path_rate < 1.0, "0 <= drop_path_rate < 1"),
        ("clip_grad_norm", config.clip_grad_norm is None or config.clip_grad_norm > 0, "a positive float or None"),
        ("height", config.height is None or config.height >= 1, "an integer >= 1 or None"),
        ("width", config.width is None or config.width >= 1, "an integer >= 1 or None"),
        ("max_per_class", config.max_per_class is None or config.max_per_class >= 1, "an integer >= 1 or None"),
        ("in_chans", config.in_chans is None or config.in_chans >= 1, "an integer >= 1 or None"),
        ("num_classes", config.num_classes is None or config.num_classes >= 2, "an integer >= 2 or None"),
    ]
    parse_size_schedule(config.img_size_schedule, config.img_size)
    get_metric(config.metric)
    for name in ("head_weights", "mean", "std"):
        _floats(name, getattr(config, name))
    if config.std_list and min(config.std_list) <= 0:
        raise ValueError(f"--std {config.std!r}: expected positive values")
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(config, name)!r}: expected {expected}")
