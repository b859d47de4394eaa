"""Cropped 'same' convolutions: the same outputs and gradients as efficientnet-pytorch's, with fewer taps."""

import itertools

import pytest
import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import Conv2dDynamicSamePadding

from src.config import ModelConfig
from src.layers.sameconv import CroppedSameConv2d, crop_same_convs, useful_taps
from src.model import build_model

SIZES = [1, 2, 3, 4, 5, 7]
CONVS = [  # (kernel, stride, dilation, groups)
    (5, 1, 1, 6),  # effnet's depthwise 5 x 5
    (3, 2, 1, 6),  # a downsampling depthwise 3 x 3
    (5, 2, 1, 1),  # a full 5 x 5 with stride 2
    (3, 1, 2, 1),  # dilated
    (4, 3, 1, 2),  # even kernel, stride 3
]


@pytest.mark.parametrize("kernel,stride,dilation,groups", CONVS)
def test_same_output_and_gradients_as_the_library_conv(kernel, stride, dilation, groups):
    torch.manual_seed(0)
    for height, width in itertools.product(SIZES, SIZES):
        library = Conv2dDynamicSamePadding(6, 12, kernel, stride=stride, dilation=dilation, groups=groups)
        cropped = Conv2dDynamicSamePadding(6, 12, kernel, stride=stride, dilation=dilation, groups=groups)
        cropped.load_state_dict(library.state_dict())
        assert crop_same_convs(cropped) == 1 and isinstance(cropped, CroppedSameConv2d)
        x = torch.randn(3, 6, height, width, requires_grad=True)
        expected, got = library(x), cropped(x)
        assert got.shape == expected.shape, (height, width)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        upstream = torch.randn_like(expected)
        want = torch.autograd.grad(expected, (x, library.weight, library.bias), upstream)
        have = torch.autograd.grad(got, (x, cropped.weight, cropped.bias), upstream)
        for a, b in zip(have, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_one_pixel_map_keeps_only_the_centre_tap():
    assert useful_taps(1, 5, 1, 1) == (2, 1, 0, 0)  # a 5 x 5 'same' conv on 1 x 1 is a 1 x 1 conv
    assert useful_taps(2, 5, 1, 1) == (1, 3, 1, 1)  # on 2 x 2: the centre 3 x 3 with padding 1
    assert useful_taps(32, 3, 2, 1) == (0, 3, 0, 1)  # large maps: the whole kernel, the library's padding


def test_effnet_uses_cropped_convs_with_the_library_state_dict():
    model = build_model(ModelConfig(arch="effnet-b0", in_chans=1), 10)
    convs = [m for m in model.modules() if isinstance(m, Conv2dDynamicSamePadding)]
    assert convs and all(isinstance(m, CroppedSameConv2d) for m in convs)
    library = EfficientNet.from_name("efficientnet-b0", in_channels=1, image_size=None)
    keys = {k for k in library.state_dict() if not k.startswith("_fc.")}
    assert keys == {k.removeprefix("backbone.net.") for k in model.state_dict() if k.startswith("backbone.net.")}
