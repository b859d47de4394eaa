import pytest
import torch
from torch import nn


class TinyClassifier(nn.Module):
    """Averages over (H, W) and applies one linear layer: (N, C, H, W) -> (N, num_classes). No BatchNorm."""

    def __init__(self, in_chans: int = 1, num_classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class TinyConvNet(nn.Module):
    """A small conv net without BatchNorm that can fit spatial patterns."""

    def __init__(self, in_chans: int = 1, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(8 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def make_blobs(n: int, num_classes: int, size: int = 16, in_chans: int = 1, seed: int = 0):
    """Images whose class is the quadrant holding a bright square, plus noise: (n, C, size, size), (n,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = 0.1 * torch.randn(n, in_chans, size, size, generator=g)
    half = size // 2
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label % 4, 2)
        x[i, :, r * half : (r + 1) * half, c * half : (c + 1) * half] += 1.0
    return x, y


@pytest.fixture
def blobs():
    return make_blobs(48, 4)
