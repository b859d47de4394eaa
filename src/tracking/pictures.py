"""Pictures in TensorBoard: what the augmentations did, which classes get confused, which images the model gets
confidently wrong, and the run's settings for the HParams tab.

ignite's TensorBoard handlers log scalars only (pytorch/ignite#829, the confusion matrix, is still open), so these
views are our own, drawn with tensorboardX, torchvision's ``make_grid``, scikit-learn's confusion matrix and
per-class scores, and matplotlib. Everything is written by rank 0, at the start and at each validation of the
selecting evaluator, never per iteration:

- ``images/train`` (the augmented training images of epoch 1 as the model receives them, before mixup) and
  ``images/valid`` (valid-time transforms): de-normalised; 1 channel as grey, 3 as RGB, others through a colour
  per channel (red, green, blue, yellow, magenta, cyan, as in Recursion Cellular's ``rxrx`` tools), summed and
  scaled into [0, 1] per image where the sum goes above 1.
- ``<evaluator>/confusion_matrix`` (per head with several heads): rows normalised to the true class; with more
  than 20 classes, the 20 with the most errors.
- ``<evaluator>/per_class``: a Markdown table of precision, recall, F1 and support per class.
- ``<evaluator>/top_losses``: the ``--top-losses`` valid images with the highest loss, with their true and
  predicted labels and the predicted probability.
- ``<evaluator>/pr_curve/<tag>`` for multi-label tasks (the 20 most frequent tags).
- hparams (``hparams/`` sub-folder): the settings that differ from the defaults, with the best score.

The evaluator's outputs are reduced to a few numbers per image on the device as it runs (loss, predicted class and
probability), gathered from every process once per validation (`src.utils.distributed.gather_rows`), exactly as the
metrics are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torchvision.utils import make_grid

from src.targets import Task
from src.utils import distributed

MAX_CLASSES = 20  # classes shown in a confusion matrix, PR curves drawn
GRID_IMAGES = 16
PALETTE = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=torch.float32)


def to_rgb(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """De-normalises images and maps their channels to RGB (see the module doc).

    Args:
        images: float (N, C, H, W), normalised with ``mean``/``std`` (units of pixel / 255, one per channel).

    Returns:
        float32 (N, 3, H, W) in [0, 1].
    """
    x = images.float() * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    x = x.clamp(0, 1)
    channels = x.shape[1]
    if channels == 1:
        return x.expand(-1, 3, -1, -1)
    if channels == 3:
        return x
    colours = PALETTE[torch.arange(channels) % len(PALETTE)]  # (C, 3)
    rgb = torch.einsum("nchw,ck->nkhw", x, colours)
    return rgb / rgb.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1.0)  # the sum saturates: scale it into [0, 1]


def image_grid(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A grid of images (torchvision's ``make_grid``): float (N, C, H, W) normalised -> float32 (3, H', W')."""
    return make_grid(to_rgb(images, mean, std), nrow=min(8, len(images)), padding=2, pad_value=1.0)


def confusion_figure(matrix: np.ndarray, classes: list[str], title: str) -> Figure:
    """The confusion matrix normalised per true class, as a figure; with more than `MAX_CLASSES` classes, those with
    the most errors.

    Args:
        matrix: int (K, K) counts, rows true classes, columns predictions (scikit-learn's ``confusion_matrix``).
        classes: the K class names.
        title: the figure's title.
    """
    shown = np.arange(len(classes))
    if len(classes) > MAX_CLASSES:
        errors = matrix.sum(0) + matrix.sum(1) - 2 * np.diag(matrix)
        shown = np.sort(np.argsort(-errors, kind="stable")[:MAX_CLASSES])
        title += f" ({MAX_CLASSES} of {len(classes)} classes, most errors)"
    counts = matrix[np.ix_(shown, shown)]
    rates = matrix[shown][:, shown] / np.maximum(matrix[shown].sum(1, keepdims=True), 1)
    size = 2 + 0.4 * len(shown)
    figure = Figure(figsize=(size + 1, size))
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046)
    names = [classes[i] for i in shown]
    axes.set_xticks(range(len(shown)), names, rotation=90, fontsize=8)
    axes.set_yticks(range(len(shown)), names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    if len(shown) <= 12:
        for (i, j), count in np.ndenumerate(counts):
            colour = "white" if rates[i, j] > 0.5 else "black"
            axes.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    figure.tight_layout()
    return figure


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> str:
    """Precision, recall, F1 and support per class (scikit-learn), as a Markdown table.

    Args:
        y_true, y_pred: int (N,) class indices, or 0/1 (N, K) indicators for multi-label tasks.
        classes: the K class names.
    """
    labels = None if y_true.ndim == 2 else list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    rows = ["| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    rows += [
        f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} | {s} |"
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    ]
    return "\n".join(rows)


def captioned_grid(images: torch.Tensor, captions: list[str], tile: int = 128, columns: int = 4) -> np.ndarray:
    """The images, each enlarged to ``tile`` pixels with its caption below, in a grid (Pillow: ~50x faster than a
    matplotlib figure of subplots, which took 0.5-0.7 s per validation for 16 images).

    Args:
        images: float32 (N, 3, H, W) in [0, 1].
        captions: one caption per image (lines separated by newlines).

    Returns:
        uint8 (H', W', 3).
    """
    lines = max((c.count("\n") + 1 for c in captions), default=1)
    strip = 12 * lines + 4
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * (tile + 4), rows * (tile + strip + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (k % columns) * (tile + 4) + 2, (k // columns) * (tile + strip + 4) + 2
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        canvas.paste(Image.fromarray(pixels).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        draw.multiline_text((x + 2, y + tile + 2), caption, fill="black", spacing=2)
    return np.asarray(canvas)


class ValidationOutputs:
    """Per-image results of one validation, reduced on the device as the evaluator runs: the loss (N,), and per
    head the true class, the predicted class and its probability (N, heads); the probabilities (N, K) for
    multi-label tasks. `gathered` joins every process's rows in the order of the valid fold."""

    def __init__(self, task: Task):
        self.task = task
        self.parts: list[dict[str, torch.Tensor]] = []

    def reset(self) -> None:
        self.parts = []

    @torch.no_grad()
    def update(self, y_pred: torch.Tensor, y: torch.Tensor) -> None:
        """Adds a batch: ``y_pred`` float (N, num_outputs) logits, ``y`` the targets (see `Task.to_soft`)."""
        if self.task.kind == "multilabel":
            loss = F.binary_cross_entropy_with_logits(y_pred, y.float(), reduction="none").sum(1)
            self.parts.append({"loss": loss, "probs": torch.sigmoid(y_pred), "true": y.float()})
            return
        true = y.view(len(y), -1)  # (N, heads)
        losses, preds, confs, start = [], [], [], 0
        for h, size in enumerate(self.task.sizes):
            logits = y_pred[:, start : start + size]
            start += size
            losses.append(F.cross_entropy(logits, true[:, h], reduction="none"))
            conf, pred = logits.softmax(1).max(1)
            preds.append(pred)
            confs.append(conf)
        loss = torch.stack(losses, 1).sum(1)
        self.parts.append({"loss": loss, "true": true, "pred": torch.stack(preds, 1), "conf": torch.stack(confs, 1)})

    def gathered(self) -> dict[str, np.ndarray]:
        """Every process's rows, in the valid fold's order, as numpy arrays (a collective call under DDP)."""
        keys = self.parts[0].keys() if self.parts else ()
        return {k: distributed.gather_rows(torch.cat([p[k] for p in self.parts])).cpu().numpy() for k in keys}


class Pictures:
    """The pictures of one run (see the module doc).

    Args:
        writer: a tensorboardX ``SummaryWriter`` on rank 0, None in the other processes (which still take part in
            gathering the outputs).
        task: the task (class names, heads).
        loaders: the run's `src.loaddata.Loaders` (the datasets, the normalisation).
        top_losses: how many top-loss images to show at each validation.
    """

    def __init__(self, writer, task: Task, loaders, top_losses: int = 16):
        self.writer, self.task, self.loaders, self.top_losses = writer, task, loaders, top_losses

    def attach(self, trainer: Engine, selector: Engine, tag: str, global_step: Callable[[], int]) -> None:
        """Draws the start grids when ``trainer`` starts and, after each run of ``selector`` (the selecting evaluator,
        whose metric selects checkpoints and stops early, named ``tag``), its confusion matrices, per-class table, top
        losses and PR curves, each at TensorBoard's x-axis value ``global_step()`` (the epoch, or the iteration with
        validations inside epochs)."""
        outputs = ValidationOutputs(self.task)
        if self.writer is not None:
            trainer.add_event_handler(Events.STARTED, lambda: log_image_grids(self.writer, self.loaders, global_step()))
        selector.add_event_handler(Events.STARTED, outputs.reset)
        selector.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.update(*e.state.output[:2]))

        def draw() -> None:
            results = outputs.gathered()
            if self.writer is None or not results:
                return
            log_class_views(self.writer, results, self.task, tag, global_step())
            if self.top_losses and self.loaders.mean:  # images (point sequences have no normalisation)
                log_top_losses(self.writer, results, self.task, self.loaders, tag, global_step(), self.top_losses)
            self.writer.flush()

        selector.add_event_handler(Events.COMPLETED, draw)


def log_image_grids(writer, loaders, global_step: int) -> None:
    """``images/train`` (epoch 1's augmentation of evenly spaced training rows) and ``images/valid``."""
    if not loaders.mean:  # point sequences (--arch gru) are not images
        return
    train_set, valid_set = loaders.train.dataset, loaders.valid_images
    sampler = loaders.train.sampler
    rows = np.linspace(0, len(train_set) - 1, min(GRID_IMAGES, len(train_set))).astype(int)
    train = loaders.view(train_set, [(int(r), sampler.seed, 0) for r in rows])
    rows = np.linspace(0, len(valid_set) - 1, min(GRID_IMAGES, len(valid_set))).astype(int)
    valid = loaders.view(valid_set, [int(r) for r in rows])
    writer.add_image("images/train", image_grid(train, loaders.mean, loaders.std), global_step)
    writer.add_image("images/valid", image_grid(valid, loaders.mean, loaders.std), global_step)


def log_class_views(writer, results: dict[str, np.ndarray], task: Task, tag: str, global_step: int) -> None:
    """Confusion matrices and per-class tables (PR curves and the table at probability 0.5 for multi-label)."""
    if task.kind == "multilabel":
        true, probs = results["true"].astype(int), results["probs"]
        classes = task.classes
        writer.add_text(f"{tag}/per_class", per_class_table(true, (probs > 0.5).astype(int), classes), global_step)
        for k in np.argsort(-true.sum(0), kind="stable")[:MAX_CLASSES]:
            writer.add_pr_curve(
                f"{tag}/pr_curve/{classes[k]}", torch.from_numpy(true[:, k]), torch.from_numpy(probs[:, k]), global_step
            )
        return
    for h, head in enumerate(task.heads):
        suffix = f"/{head.column}" if len(task.heads) > 1 else ""
        true, pred, classes = results["true"][:, h], results["pred"][:, h], list(head.classes)
        matrix = confusion_matrix(true, pred, labels=list(range(len(classes))))
        title = f"{tag}{suffix}: accuracy {np.mean(true == pred):.4f} on {len(true)} images"
        writer.add_figure(f"{tag}/confusion_matrix{suffix}", confusion_figure(matrix, classes, title), global_step)
        writer.add_text(f"{tag}/per_class{suffix}", per_class_table(true, pred, classes), global_step)


def log_top_losses(writer, results: dict[str, Any], task: Task, loaders, tag: str, global_step: int, k: int) -> None:
    """The ``k`` valid images with the highest loss, captioned with their true and predicted labels."""
    order = np.argsort(-results["loss"], kind="stable")[:k]
    images = to_rgb(loaders.view(loaders.valid_images, [int(i) for i in order]), loaders.mean, loaders.std)
    captions = [_caption(results, task, int(i)) for i in order]
    writer.add_image(f"{tag}/top_losses", captioned_grid(images, captions), global_step, dataformats="HWC")


def _caption(results: dict[str, np.ndarray], task: Task, i: int, width: int = 20) -> str:
    """``true 5`` / ``pred 6 0.98`` (per head) / ``loss 3.21``, each line cut to ``width`` characters."""
    if task.kind == "multilabel":
        classes = task.classes
        true = " ".join(c for c, t in zip(classes, results["true"][i], strict=True) if t > 0.5) or "-"
        pred = " ".join(c for c, p in zip(classes, results["probs"][i], strict=True) if p > 0.5) or "-"
        lines = [f"true {true}", f"pred {pred}"]
    else:
        lines = []
        for h, head in enumerate(task.heads):
            true, pred, conf = results["true"][i, h], results["pred"][i, h], results["conf"][i, h]
            lines += [f"true {head.classes[true]}", f"pred {head.classes[pred]} {conf:.2f}"]
    lines.append(f"loss {results['loss'][i]:.2f}")
    return "\n".join(line if len(line) <= width else line[: width - 1] + "~" for line in lines)


def log_hparams(writer, settings: dict[str, Any], metrics: dict[str, float]) -> None:
    """The settings (values as text where TensorBoard needs it) and the final metrics, in the ``hparams``
    sub-folder (one per run, so the HParams tab lists each run once)."""
    values = {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in settings.items()}
    writer.add_hparams(values or {"recipe": "default"}, metrics, name="hparams")
