"""Mixup of two samples (Beta) and of k samples (Dirichlet) with soft targets.

- Beta mixup: Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization",
  ICLR 2018, https://arxiv.org/abs/1710.09412. One weight lam ~ Beta(alpha, alpha) per batch;
  x = lam * x + (1 - lam) * x[perm].
- Dirichlet k-way mixup: the k-sample generalisation, weights w ~ Dirichlet(alpha * 1_k) per batch;
  x = sum_j w_j * x[perm_j] with perm_0 the identity (no well-kept library offers it).

- Manifold mixup: the same weights and permutations applied to the hidden state after a drawn stage of the
  backbone (`src.layers.manifold`, Verma et al. 2019).
- CutMix: Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong Classifiers with
  Localizable Features", ICCV 2019, https://arxiv.org/abs/1905.04899. lam ~ Beta(alpha, alpha); a box of
  (1 - lam) of the image, centred uniformly and clipped to the image, is pasted from x[perm]; lam is then
  corrected to the pasted box's true area. With both mixup and CutMix on, ``mix_prob`` and ``switch_prob`` have
  the semantics of timm's ``timm.data.Mixup`` (the share of batches mixed; the share of those using CutMix). timm's
  class draws from numpy's global generator and one-hot encodes integer labels only; this one draws from its own
  seeded generator (saved with the checkpoints, so a resumed run mixes as the uninterrupted one) and mixes
  multi-label and multi-head targets alike.

Targets become the same convex combination of the samples' targets, so they sum to 1 per row (per head).
Randomness comes from the `numpy.random.Generator` the object owns, seeded explicitly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from src.layers.manifold import StageMixer


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int, float]:
    """The box CutMix pastes for a drawn ``lam``: rows y1:y2, columns x1:x2 (pixels), and lam corrected to the box.

    The box has sides ``sqrt(1 - lam)`` times the image's (rounded down to whole pixels), its centre uniform over
    the image, and is clipped to the image; the returned lam is ``1 - box area / image area``, the true share of
    the original image that is left.
    """
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y1, y2 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h - cut_h // 2, 0, height))
    x1, x2 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w - cut_w // 2, 0, width))
    return y1, y2, x1, x2, 1.0 - (y2 - y1) * (x2 - x1) / (height * width)


@dataclasses.dataclass(frozen=True)
class MixChoice:
    """Which batches are mixed and how, with the semantics of timm's ``Mixup``: CutMix beside or instead of mixup,
    and the shares of batches mixed and cut.

    Attributes:
        cutmix_alpha: CutMix concentration, >= 0 (0: no CutMix).
        mix_prob: share of batches mixed; the others pass unmixed (with soft targets).
        switch_prob: with both alphas > 0, share of the mixed batches that use CutMix rather than mixup.
    """

    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5


class Mixup:
    """Mixes a batch (mixup, k-way mixup or CutMix) and returns soft targets.

    Args:
        alpha: mixup concentration, >= 0 (0: no mixup). Small values (0.2-0.4) keep most images close to one sample.
        num_classes: number of classes of the integer labels.
        k: samples mixed per image; 2 draws lam ~ Beta(alpha, alpha), k > 2 draws Dirichlet(alpha * 1_k).
        seed: seed of the generator drawing the weights, permutations, boxes and choices.
        to_soft: maps the batch's targets to float (N, num_outputs) before mixing (`Task.to_soft`: multi-hot
            tags, one-hot blocks per head); None one-hot encodes integer labels (N,) to (N, num_classes).
        choice: CutMix's concentration, which batches are mixed, and with both alphas on, how (`MixChoice`).
        stages: with a `src.layers.manifold.StageMixer`, mixup (not CutMix) mixes the hidden state after a stage drawn
            uniformly from the input (0) and the backbone's stages (manifold mixup); None mixes the input.

    Raises:
        ValueError: both alphas 0 or one negative, k < 2, CutMix with k > 2, num_classes < 2, or a probability
            outside [0, 1].
    """

    def __init__(
        self,
        alpha: float,
        num_classes: int,
        k: int = 2,
        seed: int = 0,
        to_soft: Callable[[torch.Tensor], torch.Tensor] | None = None,
        choice: MixChoice = MixChoice(),
        stages: StageMixer | None = None,
    ):
        cutmix_alpha = choice.cutmix_alpha
        if alpha < 0 or cutmix_alpha < 0 or alpha == cutmix_alpha == 0:
            raise ValueError(f"mixup alpha and cutmix alpha must be >= 0, one > 0; got {alpha}, {cutmix_alpha}")
        if k < 2:
            raise ValueError(f"mixup k must be >= 2, got {k}")
        if cutmix_alpha > 0 and k > 2:
            raise ValueError(f"CutMix pastes one box from one other image; it needs mixup k = 2, got {k}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not (0 <= choice.mix_prob <= 1 and 0 <= choice.switch_prob <= 1):
            raise ValueError(f"mix_prob and switch_prob must be in [0, 1]; got {choice}")
        self.alpha, self.num_classes, self.k, self.to_soft = alpha, num_classes, k, to_soft
        self.cutmix_alpha, self.mix_prob, self.switch_prob = cutmix_alpha, choice.mix_prob, choice.switch_prob
        self.stages = stages
        self.rng = np.random.default_rng(seed)

    def sample_weights(self) -> np.ndarray:
        """Draws the k mixing weights of one batch, shape (k,), float64, summing to 1."""
        if self.k == 2:
            lam = self.rng.beta(self.alpha, self.alpha)
            return np.array([lam, 1.0 - lam])
        return self.rng.dirichlet(np.full(self.k, self.alpha))

    def __call__(
        self, x: torch.Tensor | Sequence[torch.Tensor], y: torch.Tensor
    ) -> tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Mixes a batch.

        Args:
            x: inputs, (N, C, H, W) float, or ``(images (N, C, H, W), metadata (N, width))`` (`src.data.metadata`),
                whose metadata is mixed with the images' weights.
            y: integer labels (N,) int64, soft/one-hot targets (N, num_classes) float, or anything ``to_soft`` takes.

        Returns:
            Mixed inputs (as ``x``) and soft targets (N, num_classes) float32, the same convex combination
            of the samples' targets (rows sum to 1 for one-hot targets, to 1 per head for several heads). When
            manifold mixup draws a stage > 0, the images come back unmixed and the mix of that stage's output is
            armed for the next training forward pass.
        """
        images, meta = (x[0], x[1]) if isinstance(x, (tuple, list)) else (x, None)
        n = images.shape[0]
        if self.to_soft is not None:
            targets = self.to_soft(y)
        else:
            targets = y.float() if y.ndim == 2 else F.one_hot(y, self.num_classes).float()  # (N, num_classes)
        if self.mix_prob < 1 and self.rng.random() >= self.mix_prob:
            return x, targets
        if self.cutmix_alpha > 0 and (self.alpha == 0 or self.rng.random() < self.switch_prob):
            images, weights, index = self.cutmix(images)
        else:
            weights = self.sample_weights()
            perms = [np.arange(n)] + [self.rng.permutation(n) for _ in range(self.k - 1)]
            index = [_index(p, images.device) for p in perms]
            stage = 0 if self.stages is None else self.stages.draw(images, self.rng)
            if stage > 0:
                self.stages.arm(stage, weights, index)
            else:
                images = _combine(images, weights, index)
        targets = _combine(targets, weights, index)
        return (images if meta is None else (images, _combine(meta, weights, index))), targets

    def cutmix(self, x: torch.Tensor) -> tuple[torch.Tensor, list[float], list[torch.Tensor]]:
        """CutMix of images x (N, C, H, W) (see `cutmix_box`): the mixed images, and the weights ``[lam, 1 - lam]``
        and row indices ``[identity, permutation]`` that mix their targets."""
        lam = self.rng.beta(self.cutmix_alpha, self.cutmix_alpha)
        y1, y2, x1, x2, lam = cutmix_box(lam, x.shape[-2], x.shape[-1], self.rng)
        index = _index(self.rng.permutation(x.shape[0]), x.device)
        mixed = x.clone()
        mixed[..., y1:y2, x1:x2] = x[index][..., y1:y2, x1:x2]
        return mixed, [lam, 1.0 - lam], [torch.arange(x.shape[0], device=x.device), index]

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def _index(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """int64 row indices (N,) on ``device``; on CUDA copied from pinned memory without waiting: a copy from pageable
    host memory waits for the GPU to finish the work queued before it, on every batch."""
    rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    return rows.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else rows.to(device)


def _combine(values: torch.Tensor, weights, index: list[torch.Tensor]) -> torch.Tensor:
    """``sum_j weights[j] * values[index[j]]``: rows (N, ...) mixed as the images are."""
    return sum(float(w) * values[i] for w, i in zip(weights, index))
