"""Mixup of two samples (Beta) and of k samples (Dirichlet) with soft targets.

- Beta mixup: Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization",
  ICLR 2018, https://arxiv.org/abs/1710.09412. One weight lam ~ Beta(alpha, alpha) per batch;
  x = lam * x + (1 - lam) * x[perm].
- Dirichlet k-way mixup: the k-sample generalisation, weights w ~ Dirichlet(alpha * 1_k) per batch;
  x = sum_j w_j * x[perm_j] with perm_0 the identity (no well-kept library offers it).

Targets become the same convex combination of one-hot vectors, so they sum to 1 per row.
Randomness comes from the `numpy.random.Generator` the object owns, seeded explicitly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class Mixup:
    """Mixes a batch and returns soft targets.

    Args:
        alpha: concentration, > 0. Small values (0.2-0.4) keep most images close to one sample.
        num_classes: number of classes of the integer labels.
        k: samples mixed per image; 2 draws lam ~ Beta(alpha, alpha), k > 2 draws Dirichlet(alpha * 1_k).
        seed: seed of the generator drawing the weights and permutations.
        to_soft: maps the batch's targets to float (N, num_outputs) before mixing (`Task.to_soft`: multi-hot
            tags, one-hot blocks per head); None one-hot encodes integer labels (N,) to (N, num_classes).

    Raises:
        ValueError: alpha <= 0, k < 2 or num_classes < 2.
    """

    def __init__(self, alpha: float, num_classes: int, k: int = 2, seed: int = 0, to_soft=None):
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        if k < 2:
            raise ValueError(f"mixup k must be >= 2, got {k}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.alpha, self.num_classes, self.k, self.to_soft = alpha, num_classes, k, to_soft
        self.rng = np.random.default_rng(seed)

    def sample_weights(self) -> np.ndarray:
        """Draws the k mixing weights of one batch, shape (k,), float64, summing to 1."""
        if self.k == 2:
            lam = self.rng.beta(self.alpha, self.alpha)
            return np.array([lam, 1.0 - lam])
        return self.rng.dirichlet(np.full(self.k, self.alpha))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixes a batch.

        Args:
            x: inputs, (N, C, H, W) float.
            y: integer labels (N,) int64, soft/one-hot targets (N, num_classes) float, or anything ``to_soft`` takes.

        Returns:
            Mixed inputs (N, C, H, W) and soft targets (N, num_classes) float32, the same convex combination
            of the samples' targets (rows sum to 1 for one-hot targets, to 1 per head for several heads).
        """
        n = x.shape[0]
        if self.to_soft is not None:
            targets = self.to_soft(y)
        else:
            targets = y.float() if y.ndim == 2 else F.one_hot(y, self.num_classes).float()  # (N, num_classes)
        weights = self.sample_weights()
        perms = [np.arange(n)] + [self.rng.permutation(n) for _ in range(self.k - 1)]
        index = [torch.as_tensor(p, device=x.device) for p in perms]
        x_mixed = sum(float(w) * x[i] for w, i in zip(weights, index))
        y_mixed = sum(float(w) * targets[i] for w, i in zip(weights, index))
        return x_mixed, y_mixed

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
