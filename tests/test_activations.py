import pytest
import torch
import torch.nn.functional as F
from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish
from torch import nn

from src.activations import REPLACEABLE, get_activation, replace_activations
from src.config import ModelConfig
from src.model import build_model


@pytest.mark.parametrize("arch", ["effnet-b0", "se_resnext50_32x4d", "densenet121"])
def test_mish_swap_leaves_no_original_activation(arch):
    model = build_model(ModelConfig(arch=arch, in_chans=1), 5).eval()
    x = torch.randn(2, 1, 32, 32)
    before = sum(isinstance(m, REPLACEABLE) for m in model.modules())
    replaced = replace_activations(model, "mish")
    assert before > 0 and replaced == before
    assert not any(isinstance(m, (nn.ReLU, nn.SiLU, Swish, MemoryEfficientSwish)) for m in model.modules())
    assert sum(isinstance(m, nn.Mish) for m in model.modules()) == replaced
    with torch.no_grad():
        assert model(x).shape == (2, 5)


def test_build_model_activation_flag_swaps():
    model = build_model(ModelConfig(arch="effnet-b0", in_chans=1, activation="mish"), 3)
    assert any(isinstance(m, nn.Mish) for m in model.modules())
    assert not any(isinstance(m, MemoryEfficientSwish) for m in model.modules())


def test_mish_matches_its_definition():
    x = torch.linspace(-6, 6, 101)
    assert torch.allclose(get_activation("mish")()(x), x * torch.tanh(F.softplus(x)), atol=1e-6)


def test_unknown_activation_lists_known():
    with pytest.raises(ValueError, match="mish"):
        get_activation("gelu2")
