import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.losses import build_criterion
from src.mixup import Mixup


def test_beta_mixup_targets_sum_to_one_and_mix_inputs_consistently():
    mixup = Mixup(alpha=0.4, num_classes=5, k=2, seed=0)
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 2, 2).clone()
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    x_mixed, y_mixed = mixup(x, y)
    assert x_mixed.shape == x.shape and y_mixed.shape == (6, 5)
    assert torch.allclose(y_mixed.sum(1), torch.ones(6))
    assert x_mixed.min() >= 0 and x_mixed.max() <= 5  # convex combinations of the inputs


def test_dirichlet_mixup_targets_sum_to_one():
    mixup = Mixup(alpha=1.0, num_classes=10, k=3, seed=1)
    x, y = torch.randn(32, 3, 4, 4), torch.randint(0, 10, (32,))
    x_mixed, y_mixed = mixup(x, y)
    assert y_mixed.shape == (32, 10)
    assert torch.allclose(y_mixed.sum(1), torch.ones(32), atol=1e-6)
    assert (y_mixed >= 0).all()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_inputs_and_targets_get_the_same_mix(k):
    n = 8
    x = torch.eye(n).view(n, n, 1, 1)  # sample i is the one-hot vector of its own label i
    y = torch.arange(n)
    weights = Mixup(alpha=0.7, num_classes=n, k=k, seed=11).sample_weights()
    x_mixed, y_mixed = Mixup(alpha=0.7, num_classes=n, k=k, seed=11)(x, y)
    assert torch.allclose(x_mixed.view(n, n), y_mixed, atol=1e-6)
    assert (y_mixed[y, y] >= weights[0] - 1e-6).all()  # perm 0 is the identity: each image keeps weight w_0


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_beta_weights_follow_beta_distribution(alpha):
    mixup = Mixup(alpha=alpha, num_classes=2, k=2, seed=0)
    lam = np.array([mixup.sample_weights()[0] for _ in range(20000)])
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)  # Var of Beta(a, a)


@pytest.mark.parametrize("alpha,k", [(0.5, 3), (2.0, 4)])
def test_dirichlet_weights_follow_dirichlet_distribution(alpha, k):
    mixup = Mixup(alpha=alpha, num_classes=2, k=k, seed=0)
    w = np.stack([mixup.sample_weights() for _ in range(20000)])
    a0 = alpha * k
    assert np.allclose(w.sum(1), 1.0)
    assert np.allclose(w.mean(0), 1 / k, atol=0.01)
    assert np.allclose(w.var(0), alpha * (a0 - alpha) / (a0**2 * (a0 + 1)), rtol=0.06)


def test_same_seed_same_mix():
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    a = Mixup(0.4, 3, seed=7)(x, y)
    b = Mixup(0.4, 3, seed=7)(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="alpha"):
        Mixup(0.0, 10)
    with pytest.raises(ValueError, match="k"):
        Mixup(0.4, 10, k=1)


def test_soft_target_loss_with_label_smoothing_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    eps = 0.1
    smoothed = soft * (1 - eps) + eps / 3
    expected = -(smoothed * F.log_softmax(logits, dim=1)).sum(1).mean()
    assert torch.isclose(build_criterion("ce", eps)(logits, soft), expected, atol=1e-6)
    # One-hot soft targets give the same loss as class indices.
    one_hot = F.one_hot(torch.tensor([0, 2]), 3).float()
    assert torch.isclose(
        build_criterion("ce", eps)(logits, one_hot), build_criterion("ce", eps)(logits, torch.tensor([0, 2]))
    )
