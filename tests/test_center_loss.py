"""Center loss (--center-loss, --center-lr): value by hand, center updates independent of the weight, CLI."""

import pytest
import torch

from src.losses import CenterLoss, center_optimizer
from src.train import main
from tests.test_cli import TINY


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


def test_cli_center_loss_with_accumulation_mixup_and_resume(tmp_path):
    flags = ["--center-loss", "0.01", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "center", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    first = torch.load(tmp_path / "center" / "checkpoint_1.pt", weights_only=False)
    assert main(["--resume", str(tmp_path / "center"), "--epochs", "2"]) == 0
    second = torch.load(tmp_path / "center" / "checkpoint_2.pt", weights_only=False)
    assert first["center_loss"]["centers"].shape == (10, 1280)
    assert not torch.equal(first["center_loss"]["centers"], second["center_loss"]["centers"])  # trained on
    assert second["center_optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.5 / 0.01)  # alpha / lambda
