"""Losses by hand: center loss and its centers' own step, ArcFace / CosFace margins (also against
pytorch-metric-learning), weighted heads, BCE label smoothing."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.config import LossConfig, ModelConfig
from src.layers.heads import CosineHead, LargeMarginHead
from src.losses import (
    CenterLoss,
    MarginSoftmaxLoss,
    MultiHeadLoss,
    SmoothBCEWithLogits,
    center_optimizer,
    task_criterion,
)
from src.model import Classifier
from src.targets import Head, Task
from tests.helpers import HEADS


def _loss(weight: float) -> CenterLoss:
    loss = CenterLoss(num_classes=2, num_features=2, weight=weight)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    return loss


def test_center_loss_by_hand():
    features = torch.tensor([[3.0, 4.0], [1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([0, 1, 1])
    # squared distances to the own center: 25, 1, 2 -> weight * 1/2 * mean = 0.1 * 0.5 * 28 / 3
    assert _loss(0.1)(features, target).item() == pytest.approx(0.1 * 0.5 * 28 / 3)
    soft = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])  # mixup targets: the dominant class counts
    assert _loss(0.1)(features, soft).item() == pytest.approx(0.1 * 0.5 * 28 / 3)


@pytest.mark.parametrize("weight", [0.01, 1.0])
def test_centers_move_by_alpha_whatever_the_weight(weight):
    features = torch.tensor([[3.0, 4.0], [1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([0, 1, 1])
    loss = _loss(weight)
    optimizer = center_optimizer(loss, lr=0.5)
    loss(features, target).backward()
    optimizer.step()
    # c_j -= alpha / N * sum_{i: y_i = j} (c_j - x_i), N = 3
    step = 0.5 / 3
    expected = torch.tensor([[step * 3.0, step * 4.0], [1.0 - step * (0.0 + 1.0), 1.0 - step * (-1.0 + 1.0)]])
    assert torch.allclose(loss.centers.detach(), expected)


SINGLE5 = Task("single", (Head("label", tuple("abcde")),))


def _unit_head(kind: str, margin: float, scale: float) -> CosineHead:
    """Two classes whose weights are the unit vectors e1, e2: the cosines of an embedding (cos a, sin a)
    with the classes are cos a and sin a."""
    head = CosineHead(2, 2, kind, margin=margin, scale=scale)
    with torch.no_grad():
        head.margin_loss.W.copy_(torch.eye(2))  # pytorch-metric-learning keeps W as (embedding_size, num_classes)
    return head


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_loss_by_hand(kind):
    a = math.radians(30)
    scale, margin = 10.0, (20.0 if kind == "arcface" else 0.2)
    head = _unit_head(kind, margin, scale)
    x = torch.tensor([[math.cos(a), math.sin(a)]])  # 30 degrees from class 0, 60 from class 1
    logits = head(x)
    assert torch.allclose(logits, scale * torch.tensor([[math.cos(a), math.sin(a)]]), atol=1e-5)

    target_logit = math.cos(a + math.radians(margin)) if kind == "arcface" else math.cos(a) - margin
    z0, z1 = scale * target_logit, scale * math.sin(a)
    expected = -z0 + math.log(math.exp(z0) + math.exp(z1))  # cross entropy with the margin on class 0
    loss = MarginSoftmaxLoss(head.margin_loss)(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() > F.cross_entropy(logits, torch.tensor([0])).item()  # the margin makes it harder


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_loss_equals_the_library_loss_on_embeddings(kind):
    torch.manual_seed(0)
    head = CosineHead(8, 5, kind)
    x, y = torch.randn(16, 8), torch.randint(0, 5, (16,))
    ours = MarginSoftmaxLoss(head.margin_loss)(head(x), y)
    assert ours.item() == pytest.approx(head.margin_loss(x, y).item(), rel=1e-5)
    soft = MarginSoftmaxLoss(head.margin_loss)(head(x), F.one_hot(y, 5).float())  # mixup's soft targets
    assert soft.item() == pytest.approx(ours.item(), rel=1e-5)


def test_margin_head_refuses_several_heads_and_other_losses():
    with pytest.raises(ValueError, match="margin heads"):
        Classifier(nn.Identity(), 4, [3, 2], ModelConfig(head="arcface"))
    task = Task("single", (Head("label", ("a", "b")),))
    with pytest.raises(ValueError, match="--loss ce"):
        task_criterion(task, LossConfig(loss="focal"), CosineHead(4, 2, "arcface"))
    with pytest.raises(ValueError, match="--loss lsoftmax trains single-label tasks with its own head"):
        task_criterion(task, LossConfig(loss="lsoftmax"))  # no L-softmax head
    with pytest.raises(ValueError, match="--loss lsoftmax trains single-label tasks"):
        task_criterion(task, LossConfig(loss="ce"), LargeMarginHead(4, 2))  # the head without its loss


def _lsoftmax(margin, step=None, num_features=8, num_classes=5, **loss_fields):
    torch.manual_seed(0)
    head = LargeMarginHead(num_features, num_classes, margin).train()
    criterion = task_criterion(SINGLE5, LossConfig(loss="lsoftmax", label_smoothing=0.0, **loss_fields), head)
    if step is not None:
        criterion.set_step(step)
    return head, criterion


@pytest.mark.parametrize("step", [0, 10_000])
def test_lsoftmax_with_m_1_is_plain_softmax_cross_entropy(step):
    head, criterion = _lsoftmax(1, step)
    x, y = torch.randn(16, 8), torch.randint(0, 5, (16,))
    logits = head(x)
    assert torch.allclose(logits, x @ head.margin_loss.W)  # a linear layer without bias
    assert criterion(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def test_lsoftmax_at_full_weight_equals_the_library_loss_and_anneals_from_softmax():
    x, y = torch.randn(16, 8), torch.randint(0, 5, (16,))
    head, criterion = _lsoftmax(4, step=None, lsoftmax_gamma=1.0)
    criterion.set_step(0)  # lambda = 1000: nearly plain softmax
    start = criterion(head(x), y).item()
    assert start == pytest.approx(F.cross_entropy(head(x), y).item(), rel=1e-2)
    criterion.set_step(10**9)  # lambda -> lambda_min = 0: the margin's full weight
    full = criterion(head(x), y)
    assert full.item() == pytest.approx(head.margin_loss(x, y).item(), rel=1e-4)  # pytorch-metric-learning's loss
    assert full.item() > start  # the margin makes it harder
    full.backward()
    assert head.margin_loss.W.grad is not None and torch.isfinite(head.margin_loss.W.grad).all()


def test_lsoftmax_lambda_follows_the_paper_schedule_and_its_floor():
    _, criterion = _lsoftmax(2, lsoftmax_gamma=0.5, lsoftmax_lambda_min=5.0)
    lams = []
    for step in (0, 10, 100, 10_000):
        criterion.set_step(step)
        lams.append(criterion.lam)
    assert lams == pytest.approx([1000.0, 1000.0 / 6, 1000.0 / 51, 5.0])


def test_lsoftmax_refuses_a_margin_outside_1_to_4():
    with pytest.raises(ValueError, match="--margin 2.5: L-softmax takes an integer angle multiplier m from 1 to 4"):
        LargeMarginHead(8, 5, 2.5)


def test_multihead_cross_entropy_is_the_weighted_mean_of_the_heads():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 1.0]])
    loss = MultiHeadLoss([3, 2], [2.0, 1.0])(logits, torch.tensor([[0, 1]]))
    root = -math.log(math.exp(2) / (math.exp(2) + 2))  # head 1: class 0 of logits (2, 0, 0)
    vowel = -math.log(math.e / (1 + math.e))  # head 2: class 1 of logits (0, 1)
    assert loss.item() == pytest.approx((2 * root + vowel) / 3, rel=1e-6)
    soft = HEADS.to_soft(torch.tensor([[0, 1]]))
    plain = LossConfig(label_smoothing=0.0)
    assert task_criterion(HEADS, plain)(logits, soft).item() == pytest.approx(loss.item(), rel=1e-6)


def test_bce_label_smoothing_moves_targets_towards_one_half():
    logits, target = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    loss = SmoothBCEWithLogits(label_smoothing=0.2)(logits, target)
    sig = 1 / (1 + math.exp(-2))
    by_hand = (math.log(2) + -(0.1 * math.log(sig) + 0.9 * math.log(1 - sig))) / 2  # targets 0.9 and 0.1
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_soft_margin_is_the_per_tag_logistic_loss_averaged_per_row():
    tags = Task("multilabel", (Head("tags", ("a", "b", "c", "d")),))
    logits, target = torch.randn(6, 4), (torch.rand(6, 4) > 0.5).float()
    criterion = task_criterion(tags, LossConfig(loss="soft_margin", label_smoothing=0.2))
    smoothed = target * 0.8 + 0.1
    by_hand = -(smoothed * F.logsigmoid(logits) + (1 - smoothed) * F.logsigmoid(-logits)).mean(1).mean()
    assert criterion(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-6)
    single = Task("single", (Head("label", ("a", "b")),))
    for task in (single, HEADS):
        with pytest.raises(ValueError, match="--loss soft_margin: a multi-label loss"):
            task_criterion(task, LossConfig(loss="soft_margin"))


@pytest.mark.parametrize("kind", ["arcface", "cosface", "lsoftmax"])
def test_margin_heads_compute_in_fp32_under_bf16_autocast(kind):
    torch.manual_seed(0)
    head = LargeMarginHead(8, 5) if kind == "lsoftmax" else CosineHead(8, 5, kind)
    weight = head.margin_loss.W.detach()
    x = (weight[:, 0] / weight[:, 0].norm() + 1e-3 * torch.randn(8)).repeat(4, 1)  # cos ~0.99999 with class 0
    x.requires_grad_(True)
    plain = head(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=1e-6, atol=1e-6)
    if kind == "arcface":  # the angle to class 0 is ~0.06 degrees: bf16 cosines would all be exactly 1
        cosine = mixed[:, 0] / head.margin_loss.scale
        assert (cosine < 1).all()
        (grad,) = torch.autograd.grad(MarginSoftmaxLoss(head.margin_loss)(mixed, torch.zeros(4, dtype=torch.long)), x)
        assert grad.abs().sum() > 0
