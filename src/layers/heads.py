"""Classifier heads beyond dropout -> linear: one linear layer per label column (`MultiHead`) and the margin
heads (`MarginHead`: ArcFace, Deng et al. 2019, https://arxiv.org/abs/1801.07698; CosFace, Wang et al. 2018,
https://arxiv.org/abs/1801.09414; L-softmax, Liu et al. 2016, https://arxiv.org/abs/1612.02295), whose margin the
training criterion applies (`src.losses.task_criterion`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn


class MultiHead(nn.Module):
    """One linear head per label column: (N, num_features) -> the heads' logits side by side (N, sum(sizes)).

    Args:
        num_features: input embedding size.
        sizes: classes per head (Bengali.AI: 168, 11, 7).
    """

    def __init__(self, num_features: int, sizes: Sequence[int]):
        super().__init__()
        self.sizes = list(sizes)
        self.heads = nn.ModuleList(nn.Linear(num_features, size) for size in self.sizes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features) for head in self.heads], dim=1)


class MarginHead(nn.Module):
    """A head whose class weights and margin belong to a pytorch-metric-learning loss (``margin_loss``): its forward
    gives the logits without the margin, which the training criterion adds (`src.losses.task_criterion`)."""

    margin_loss: nn.Module


class CosineHead(MarginHead):
    """Scaled cosine logits of a margin-based softmax head (ArcFace, Deng et al. 2019,
    https://arxiv.org/abs/1801.07698; CosFace / AM-Softmax, Wang et al. 2018, https://arxiv.org/abs/1801.09414):
    (N, num_features) -> ``scale * cos(angle between the embedding and each class weight)`` (N, num_classes).

    The class weights and the margin belong to pytorch-metric-learning's `ArcFaceLoss` / `CosFaceLoss`
    (``self.margin_loss``); the training criterion (`src.losses.MarginSoftmaxLoss`) applies its margin to these
    logits, so evaluation and prediction use plain scaled cosines. The logits are float32, computed in fp32 under
    any autocast (a bf16 cosine cannot tell angles below ~3.6 degrees from 0).

    Args:
        num_features: embedding size.
        num_classes: number of classes.
        kind: ``"arcface"`` (additive angular margin, in degrees as in pytorch-metric-learning; default 28.6 =
            0.5 rad) or ``"cosface"`` (additive cosine margin; default 0.35).
        margin: the margin; None takes the default of ``kind``.
        scale: the logit scale s (the papers use 64 for faces; 30 suits a few classes).
    """

    def __init__(
        self, num_features: int, num_classes: int, kind: str, margin: float | None = None, scale: float = 30.0
    ):
        super().__init__()
        from pytorch_metric_learning import losses

        loss_class = {"arcface": losses.ArcFaceLoss, "cosface": losses.CosFaceLoss}[kind]
        extra = {} if margin is None else {"margin": margin}
        self.margin_loss = loss_class(num_classes=num_classes, embedding_size=num_features, scale=scale, **extra)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # in fp32 whatever the autocast: in bf16 every cosine above 0.998 rounds to 1, where ArcFace's angle and its
        # gradient vanish
        with torch.autocast(features.device.type, enabled=False):
            return self.margin_loss.get_logits(features.float())


class LargeMarginHead(MarginHead):
    """The linear head of L-softmax (Liu, Wen, Yu, Yang, "Large-Margin Softmax Loss for Convolutional Neural
    Networks", ICML 2016, https://arxiv.org/abs/1612.02295): (N, num_features) -> ``W^T x`` = ``|W_j| |x| cos(theta_j)``
    (N, num_classes), a linear layer without bias.

    The class weights W (num_features, num_classes) and the margin formula belong to pytorch-metric-learning's
    `LargeMarginSoftmaxLoss` (``self.margin_loss``); the training criterion (`src.losses.LargeMarginSoftmaxLoss`)
    replaces the target's ``cos(theta)`` by ``psi(theta) = (-1)^k cos(m theta) - 2k``. The logits alone do not give
    the angle, so a training pass keeps its input's norms ``|x|`` (N,) in ``input_norm`` for that criterion.
    Evaluation and prediction use the plain logits, float32 under any autocast (as `CosineHead`'s).

    Args:
        num_features: embedding size.
        num_classes: number of classes.
        margin: the integer angle multiplier m, 1 (plain softmax) to 4; None: 4 (the library's default).

    Raises:
        ValueError: a margin that is not an integer from 1 to 4.
    """

    def __init__(self, num_features: int, num_classes: int, margin: float | None = None):
        super().__init__()
        from pytorch_metric_learning import losses

        margin = 4 if margin is None else margin
        if margin not in (1, 2, 3, 4):
            raise ValueError(f"--margin {margin}: L-softmax takes an integer angle multiplier m from 1 to 4")
        with warnings.catch_warnings():  # numpy 2's __array_wrap__ deprecation, from the library's scipy call
            warnings.simplefilter("ignore", DeprecationWarning)
            self.margin_loss = losses.LargeMarginSoftmaxLoss(num_classes, num_features, margin=int(margin))
        # the library draws W ~ N(0, 1): logits ~sqrt(num_features) times those of nn.Linear, which slowed training
        # to a crawl here; nn.Linear's own init instead (uniform, bound 1 / sqrt(num_features))
        nn.init.uniform_(self.margin_loss.W, -num_features**-0.5, num_features**-0.5)
        self.input_norm: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.float()  # fp32 whatever the autocast: the criterion recovers cos(theta) from these logits
        if self.training:
            self.input_norm = features.norm(dim=1)  # (N,)
        with torch.autocast(features.device.type, enabled=False):
            return features @ self.margin_loss.W.float()  # (N, num_classes)


MARGIN_HEADS = ("arcface", "cosface", "lsoftmax")
