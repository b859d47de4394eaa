import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.losses import cross_entropy
from src.mixup import MixChoice, Mixup, cutmix_box


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
    assert torch.isclose(cross_entropy(eps)(logits, soft), expected, atol=1e-6)
    # One-hot soft targets give the same loss as class indices.
    one_hot = F.one_hot(torch.tensor([0, 2]), 3).float()
    assert torch.isclose(
        cross_entropy(eps)(logits, one_hot), cross_entropy(eps)(logits, torch.tensor([0, 2]))
    )


# CutMix (Yun et al. 2019) and the choice between the mixes (timm's Mixup semantics).


def test_an_unclipped_box_covers_one_minus_lambda_and_lambda_is_the_true_share():
    rng = np.random.default_rng(0)
    inside = clipped = 0
    for lam in np.random.default_rng(1).uniform(0.05, 0.95, 400):
        y1, y2, x1, x2, corrected = cutmix_box(lam, 64, 48, rng)
        area = (y2 - y1) * (x2 - x1) / (64 * 48)
        assert corrected == pytest.approx(1 - area)
        side = np.sqrt(1 - lam)
        if 0 < y1 and y2 < 64 and 0 < x1 and x2 < 48:  # not clipped: the drawn size, to whole pixels
            inside += 1
            assert (y2 - y1, x2 - x1) == (int(64 * side), int(48 * side))
            assert area == pytest.approx(1 - lam, abs=2 * side / 48 + 1 / 48)
        else:
            clipped += 1
            assert area < (1 - lam) + 1e-9  # clipping only removes pixels: more of the own image is left
    assert inside > 20 and clipped > 20


def _constant_images(n: int, size: int = 16) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, size, size).clone()


@pytest.mark.parametrize("kind", ["single", "multilabel", "multihead"])
def test_cutmix_targets_are_the_pixel_shares_for_every_task_kind(kind):
    from tests.helpers import HEADS

    n = 12
    x = _constant_images(n)  # image i is filled with i: the pixels say which images a mixed one is made of
    if kind == "single":
        y, to_soft, num_classes = torch.arange(n) % 4, None, 4
    elif kind == "multilabel":
        y = torch.tensor([[i % 2, i % 3 == 0, 1] for i in range(n)], dtype=torch.float32)
        to_soft, num_classes = (lambda t: t.float()), 3
    else:
        y, to_soft, num_classes = torch.stack([torch.arange(n) % 3, torch.arange(n) % 2], 1), HEADS.to_soft, 5
    soft = to_soft(y) if to_soft else F.one_hot(y, num_classes).float()
    mixed, targets = Mixup(0.0, num_classes, seed=3, to_soft=to_soft, choice=MixChoice(cutmix_alpha=1.0))(x, y)
    for i in range(n):
        values, counts = mixed[i].unique(return_counts=True)
        share = dict(zip(values.long().tolist(), (counts / counts.sum()).tolist()))
        expected = sum(w * soft[j] for j, w in share.items())
        assert torch.allclose(targets[i], expected, atol=1e-6), i
    if kind == "single":
        assert torch.allclose(targets.sum(1), torch.ones(n))
    elif kind == "multihead":
        for head in (targets[:, :3], targets[:, 3:]):
            assert torch.allclose(head.sum(1), torch.ones(n))


def test_mix_prob_and_switch_prob_choose_the_share_of_each_mix():
    mixer = Mixup(0.4, 2, seed=5, choice=MixChoice(cutmix_alpha=1.0, mix_prob=0.6, switch_prob=0.25))
    x, y = _constant_images(16, size=32), torch.arange(16) % 2
    kinds = []
    for _ in range(2000):
        mixed, _ = mixer(x, y)
        if torch.equal(mixed, x):
            kinds.append("none")
        else:  # CutMix pastes whole pixels (the images' integer values); mixup blends them
            kinds.append("cutmix" if torch.equal(mixed, mixed.round()) else "mixup")
    share = {k: kinds.count(k) / len(kinds) for k in ("none", "cutmix", "mixup")}
    assert share["none"] == pytest.approx(0.4, abs=0.04)
    assert share["cutmix"] == pytest.approx(0.6 * 0.25, abs=0.04)


def test_a_restored_mixer_mixes_as_the_uninterrupted_one():
    first = Mixup(0.4, 3, seed=9, choice=MixChoice(cutmix_alpha=1.0))
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 3
    first(x, y)
    second = Mixup(0.4, 3, seed=0, choice=MixChoice(cutmix_alpha=1.0))
    second.load_state_dict(first.state_dict())
    for _ in range(5):
        (a, ta), (b, tb) = first(x, y), second(x, y)
        assert torch.equal(a, b) and torch.equal(ta, tb)


def test_cutmix_refuses_k_way_mixing():
    with pytest.raises(ValueError, match="needs mixup k = 2"):
        Mixup(0.4, 3, k=3, choice=MixChoice(cutmix_alpha=1.0))
