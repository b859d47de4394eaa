"""Training criteria for each task kind, chosen by ``--loss`` (the names: `src.config.choices.LOSSES`) in
`task_criterion`.

- Cross entropy takes class indices (N,) int64 or soft targets (N, num_classes) float (mixup), with
  label smoothing (Szegedy et al. 2016, https://arxiv.org/abs/1512.00567) applied in both cases by
  `torch.nn.functional.cross_entropy` itself.
- Multi-label: binary cross entropy on logits (N, C) against multi-hot or mixed targets (N, C), with
  label smoothing pulling each target towards 0.5.
- Multi-head: the weighted mean of one loss per head (Bengali.AI's 2:1:1 heads); the logits
  (N, sum of head sizes) are the heads' logits side by side.
- Focal loss (Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017,
  https://arxiv.org/abs/1708.02002): ``-(1 - p_t)^gamma log p_t`` down-weights easy examples. The binary
  form (multi-label) is torchvision's `sigmoid_focal_loss`; the softmax form is ours (torch has none).
- Margin-based softmax (ArcFace, Deng et al. 2019, https://arxiv.org/abs/1801.07698; CosFace / AM-Softmax,
  Wang et al. 2018, https://arxiv.org/abs/1801.09414): the margin functions of pytorch-metric-learning's
  `ArcFaceLoss` / `CosFaceLoss` applied to the scaled cosine logits of a `src.layers.heads.CosineHead`.
- L-softmax (Liu et al. 2016, https://arxiv.org/abs/1612.02295): the angle multiplier of pytorch-metric-learning's
  `LargeMarginSoftmaxLoss` on the logits of a `src.layers.heads.LargeMarginHead`, with the paper's annealed weight
  (the library has no annealing).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.config import LossConfig, choices
from src.layers.heads import LargeMarginHead, MarginHead
from src.targets import Task


def cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Cross entropy on logits (N, num_classes) against indices (N,) or soft targets (N, num_classes).

    Args:
        label_smoothing: in [0, 1); mixes the targets with the uniform distribution.
    """
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class SmoothBCEWithLogits(nn.Module):
    """BCE with logits (N, C) against targets in [0, 1] (N, C), mean over all entries; label smoothing
    maps a target t to t * (1 - s) + s / 2."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float() * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, target)


class SoftMarginLoss(nn.Module):
    """torch's ``MultiLabelSoftMarginLoss`` for multi-label logits (N, C) against targets in [0, 1] (N, C): the
    per-tag logistic loss averaged over the tags of each row, then over the rows (``--loss soft_margin``, from the
    QuickDraw trainer's list of losses to try); label smoothing maps a target t to t * (1 - s) + s / 2."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.loss = nn.MultiLabelSoftMarginLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target.float() * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing)


class FocalLoss(nn.Module):
    """Softmax focal loss, mean over the batch: ``-sum_c y_c (1 - p_c)^gamma log p_c`` (Lin et al. 2017).

    ``gamma = 0`` is cross entropy. Targets are indices (N,) int64 or soft (N, C) float (mixup); label
    smoothing mixes them with the uniform distribution first, as `F.cross_entropy` does.

    Args:
        gamma: focusing parameter, >= 0 (the paper's default 2).
        label_smoothing: in [0, 1).
    """

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        soft = target.float() if target.is_floating_point() else F.one_hot(target, num_classes).float()
        soft = soft * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        log_p = F.log_softmax(logits.float(), dim=1)
        return -(soft * (1.0 - log_p.exp()).pow(self.gamma) * log_p).sum(dim=1).mean()


class BinaryFocalLoss(nn.Module):
    """Sigmoid focal loss for multi-label logits (N, C) and targets in [0, 1] (N, C), mean over all entries
    (torchvision's `sigmoid_focal_loss`, no alpha weighting); label smoothing pulls targets towards 0.5."""

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import sigmoid_focal_loss

        target = target.float() * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return sigmoid_focal_loss(logits.float(), target, alpha=-1, gamma=self.gamma, reduction="mean")


class MultiHeadLoss(nn.Module):
    """Weighted mean over heads of each head's loss: sum_h w_h L_h / sum_h w_h.

    Args:
        sizes: classes per head; the logits (N, sum(sizes)) are split in this order.
        weights: weight per head.
        head_loss: the loss of one head, (logits (N, C_h), targets (N,) or (N, C_h)) -> scalar; default
            cross entropy with ``label_smoothing``.
        label_smoothing: for the default cross entropy.

    Targets are int64 (N, heads) class indices or soft (N, sum(sizes)) (mixup, one block per head).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float] | None = None,
        head_loss: nn.Module | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.sizes = list(sizes)
        self.weights = list(weights or [1.0] * len(self.sizes))
        self.head_loss = head_loss or nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft = target.is_floating_point()
        targets = target.split(self.sizes, dim=1) if soft else target.unbind(dim=1)
        losses = [
            self.head_loss(h_logits, h_target) for h_logits, h_target in zip(logits.split(self.sizes, 1), targets)
        ]
        return sum(w * loss for w, loss in zip(self.weights, losses)) / sum(self.weights)


class MarginSoftmaxLoss(nn.Module):
    """Cross entropy after adding a class margin to the target logits of a margin head (ArcFace / CosFace).

    The logits are ``s * cos(theta)`` (N, num_classes) from a `src.layers.heads.CosineHead`; for the target class,
    ``cos(theta)`` becomes ``cos(theta + m)`` (ArcFace) or ``cos(theta) - m`` (CosFace), computed by the head's
    pytorch-metric-learning loss (``modify_cosine_of_target_classes``), then rescaled and fed to cross entropy.
    With soft targets (mixup) each class gets the margin in proportion to its target weight.

    Args:
        margin_loss: the head's ``margin_loss`` (pytorch-metric-learning `ArcFaceLoss` or `CosFaceLoss`).
        label_smoothing: in [0, 1).
    """

    def __init__(self, margin_loss: nn.Module, label_smoothing: float = 0.0):
        super().__init__()
        self.margin_loss, self.label_smoothing = margin_loss, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cosine = logits.float() / self.margin_loss.scale  # (N, C)
        weight = target if target.is_floating_point() else F.one_hot(target, cosine.shape[1]).to(cosine.dtype)
        diff = self.margin_loss.modify_cosine_of_target_classes(cosine) - cosine
        margin_logits = self.margin_loss.scale_logits(cosine + weight * diff, None)
        return F.cross_entropy(margin_logits, target, label_smoothing=self.label_smoothing)


LSOFTMAX_BASE, LSOFTMAX_POWER = 1000.0, 1.0  # lambda's start and decay power, as in the authors' release


class StepAwareLoss(nn.Module, abc.ABC):
    """A criterion that changes with the optimizer step: the trainer calls `set_step` before each iteration with the
    optimizer step that iteration belongs to."""

    @abc.abstractmethod
    def set_step(self, optimizer_step: int) -> None:
        """Follows optimizer step ``optimizer_step`` (0-based; from the trainer's iteration, so a resume continues)."""


class LargeMarginSoftmaxLoss(StepAwareLoss):
    """L-softmax: cross entropy after the target logit ``|W||x| cos(theta)`` becomes
    ``|W||x| (lambda cos(theta) + psi(theta)) / (1 + lambda)``, with ``psi(theta) = (-1)^k cos(m theta) - 2k`` for
    ``theta`` in ``[k pi / m, (k + 1) pi / m]`` (pytorch-metric-learning's ``modify_cosine_of_target_classes``).

    lambda anneals the margin in, as in the paper: ``lambda = max(lambda_min, 1000 (1 + gamma t)^-1)`` at optimizer
    step t (`set_step`), so training starts as plain softmax and ends with the margin's full weight when
    ``lambda_min = 0``. With m = 1, psi = cos and the loss is plain softmax cross entropy whatever lambda.
    With soft targets (mixup) each class gets the margin in proportion to its target weight.

    Args:
        head: the model's `src.layers.heads.LargeMarginHead` (its class weights, and the norms of its last input).
        label_smoothing: in [0, 1).
        gamma: decay rate of lambda per optimizer step.
        lambda_min: the floor of lambda (0: the margin's full weight at the end).
    """

    def __init__(
        self, head: LargeMarginHead, label_smoothing: float = 0.0, gamma: float = 1.0, lambda_min: float = 0.0
    ):
        super().__init__()
        self.head, self.label_smoothing = head, label_smoothing
        self.gamma, self.lambda_min = gamma, lambda_min
        self.lam = LSOFTMAX_BASE

    def set_step(self, optimizer_step: int) -> None:
        """Sets lambda for optimizer step ``optimizer_step`` (0-based; from the trainer's iteration, so a resume
        continues)."""
        self.lam = max(self.lambda_min, LSOFTMAX_BASE * (1.0 + self.gamma * optimizer_step) ** -LSOFTMAX_POWER)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C) of the head's last training pass; target (N,) int64 or soft (N, C) float."""
        margin_loss, input_norm = self.head.margin_loss, self.head.input_norm
        self.head.input_norm = None  # used once: the next pass sets it again
        magnitude = input_norm[:, None] * margin_loss.W.float().norm(dim=0)[None, :]  # |x| |W_j| (N, C)
        cosine = logits.float() / magnitude.clamp_min(1e-12)
        psi = margin_loss.modify_cosine_of_target_classes(cosine.flatten()).view_as(cosine)
        weight = target if target.is_floating_point() else F.one_hot(target, cosine.shape[1]).to(cosine.dtype)
        margin_cosine = cosine + weight * (psi - cosine) / (1.0 + self.lam)
        return F.cross_entropy(margin_cosine * magnitude, target, label_smoothing=self.label_smoothing)


class CenterLoss(nn.Module):
    """Center loss (Wen, Zhang, Li, Qiao, "A Discriminative Feature Learning Approach for Deep Face
    Recognition", ECCV 2016): ``weight * 1/2 * mean_i ||f_i - c_{y_i}||^2``, pulling each embedding towards
    a learned center of its class; added to the classification loss.

    The centers are parameters of this module, trained by their own optimizer (`center_optimizer`, plain SGD
    as in the paper) so that the size of their updates does not depend on ``weight``.

    Args:
        num_classes: number of classes (centers).
        num_features: embedding size.
        weight: lambda, the loss weight.
    """

    def __init__(self, num_classes: int, num_features: int, weight: float):
        super().__init__()
        self.weight = weight
        self.centers = nn.Parameter(torch.randn(num_classes, num_features))

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """features (N, num_features) float, target (N,) int64 or soft (N, num_classes) (its argmax is used)."""
        if target.is_floating_point():
            target = target.argmax(dim=1)
        distances = (features.float() - self.centers[target]).pow(2).sum(dim=1)  # (N,)
        return self.weight * 0.5 * distances.mean()


def center_optimizer(center_loss: CenterLoss, lr: float = 0.5) -> torch.optim.Optimizer:
    """SGD on the centers with learning rate ``lr`` (the paper's alpha) independent of the loss weight: the gradient
    of ``weight * loss`` is divided back by ``weight`` through the learning rate."""
    return torch.optim.SGD(center_loss.parameters(), lr=lr / center_loss.weight)


def task_criterion(
    task: Task, config: LossConfig | None = None, margin_head: MarginHead | None = None
) -> nn.Module:
    """The criterion a task trains with.

    Args:
        task: single -> softmax loss; multilabel -> sigmoid loss per tag; multihead -> weighted softmax loss per head.
        config: ``loss`` (``"ce"``: cross entropy, or BCE for multi-label; ``"focal"``: softmax or sigmoid focal
            loss; ``"soft_margin"``: `SoftMarginLoss`, multi-label only), ``focal_gamma`` and ``label_smoothing``
            (in [0, 1)); None: the CLI defaults (smoothing 0.1).
        margin_head: the model's head (``model.fc``) when it is a margin head: an ArcFace / CosFace
            `src.layers.heads.CosineHead` (the criterion is then `MarginSoftmaxLoss`) or an L-softmax
            `src.layers.heads.LargeMarginHead` (`LargeMarginSoftmaxLoss`, with ``loss`` ``"lsoftmax"``).

    Raises:
        ValueError: unknown loss name, a margin head with focal loss or a multi-label / multi-head task,
            soft_margin for a task that is not multi-label, or lsoftmax without its head or for several labels.
    """
    config = config or LossConfig()
    loss, smoothing, gamma = config.loss, config.label_smoothing, config.focal_gamma
    if loss not in choices.LOSSES:
        raise ValueError(f"--loss {loss!r}: expected one of {', '.join(choices.LOSSES)}")
    if loss == "soft_margin" and (task.kind != "multilabel" or margin_head is not None):
        raise ValueError("--loss soft_margin: a multi-label loss (--multilabel, tags per row, --head linear); "
                         "use ce or focal for one label per row or per head")
    lsoftmax_head = isinstance(margin_head, LargeMarginHead)
    if (loss == "lsoftmax") != lsoftmax_head or (loss == "lsoftmax" and task.kind != "single"):
        raise ValueError("--loss lsoftmax trains single-label tasks with its own head (--head linear or lsoftmax)")
    if lsoftmax_head:
        return LargeMarginSoftmaxLoss(margin_head, smoothing, config.lsoftmax_gamma, config.lsoftmax_lambda_min)
    if margin_head is not None:
        if loss != "ce" or task.kind != "single":
            raise ValueError("--head arcface/cosface trains single-label tasks with --loss ce")
        return MarginSoftmaxLoss(margin_head.margin_loss, smoothing)
    if task.kind == "multilabel":
        if loss == "soft_margin":
            return SoftMarginLoss(smoothing)
        return BinaryFocalLoss(gamma, smoothing) if loss == "focal" else SmoothBCEWithLogits(smoothing)
    head_loss = FocalLoss(gamma, smoothing) if loss == "focal" else cross_entropy(smoothing)
    if task.kind == "multihead":
        return MultiHeadLoss(task.sizes, task.weights, head_loss)
    return head_loss
