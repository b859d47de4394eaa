"""Backbones from three libraries as feature extractors (N, C, H, W) -> (N, F, h, w): efficientnet-pytorch,
pretrainedmodels and a GRU over point sequences; and the surgery the registry (`src.model`) applies to them: an
input convolution adapted to ``in_chans`` (timm's ``adapt_input_conv``) and a smaller output stride."""

from __future__ import annotations

import copy
import math
import warnings

import torch
from torch import nn

from src.activations import replace_activations
from src.config import choices

EFFNET_BN_MOMENTUM_TF = 0.9  # efficientnet-pytorch stores 1 - (PyTorch momentum); 0.9 -> 0.1


class EfficientNetFeatures(nn.Module):
    """efficientnet-pytorch's `extract_features` as a module: (N, C, H, W) -> (N, F, h, w)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        for head_part in ("_fc", "_avg_pooling", "_dropout"):
            if hasattr(net, head_part):
                delattr(net, head_part)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


class PretrainedModelsFeatures(nn.Module):
    """pretrainedmodels' `features` as a module: (N, C, H, W) -> (N, F, h, w).

    DenseNets apply their last ReLU functionally in `logits`; it is kept here as a module so that
    activation swapping reaches it.
    """

    def __init__(self, net: nn.Module, final_relu: bool = False):
        super().__init__()
        if hasattr(net, "last_linear"):
            del net.last_linear
        self.net = net
        self.act = nn.ReLU(inplace=True) if final_relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.net.features(x))


def efficientnet_net(name: str, in_chans: int, pretrained: str | None, drop_path_rate: float) -> tuple[nn.Module, int]:
    from efficientnet_pytorch import EfficientNet

    from src.layers.sameconv import crop_same_convs

    # image_size=None selects dynamic 'same' padding, so any input size works.
    params = dict(image_size=None, batch_norm_momentum=EFFNET_BN_MOMENTUM_TF, drop_connect_rate=drop_path_rate)
    if pretrained == "imagenet":
        net = EfficientNet.from_pretrained(name, in_channels=3, num_classes=1000, **params)
    else:
        net = EfficientNet.from_name(name, in_channels=3 if pretrained else in_chans, **params)
    crop_same_convs(net)  # same outputs; skips the taps that only read padding on small maps (faster on CPU)
    # the library's MemoryEfficientSwish is x * sigmoid(x) as a Python autograd function (two kernels forward, its own
    # backward, opaque to torch.compile); torch's SiLU is the same function in one kernel each way
    replace_activations(net, "silu")
    return net, net._fc.in_features


def pretrainedmodels_net(name: str, in_chans: int, pretrained: str | None) -> tuple[nn.Module, int]:
    with torch.random.fork_rng(devices=[]):  # its import builds modules (random init): it must not move the seed
        import pretrainedmodels

    with warnings.catch_warnings():  # torchvision's deprecation warning for `pretrained=` inside pretrainedmodels
        warnings.simplefilter("ignore", UserWarning)
        net = pretrainedmodels.__dict__[name](
            num_classes=1000, pretrained="imagenet" if pretrained == "imagenet" else None
        )
    # pretrainedmodels' ResNeXt101 models share one module-level `features` Sequential between all
    # instances; a private copy keeps one model's changes (in_chans, weights) out of the next one.
    net = copy.deepcopy(net)
    if in_chans != 3 and not pretrained:
        adapt_input_conv(net, in_chans)  # random init anyway: only the shape matters
    return net, net.last_linear.in_features


class GRUBackbone(nn.Module):
    """The Quick, Draw! recurrent baseline's encoder: stacked GRU layers (Cho et al. 2014) over the (dx, dy, pen)
    points of a drawing (`src.data.strokes.strokes_to_sequence`); its last layer's final hidden state is the embedding.

    Input (N, T, C) float32 whose last column marks real points (1) and padding (0); the other C - 1 columns
    are the point features. Padding is skipped by packing the sequences to their lengths. Output
    (N, hidden_size, 1, 1), so that `src.model.Classifier`'s pooling and heads apply unchanged.

    Args:
        in_chans: C, point features plus the mask column (4 for strokes).
        hidden_size: GRU state size.
        num_layers: stacked GRU layers.
    """

    def __init__(self, in_chans: int, hidden_size: int = 256, num_layers: int = 2):
        super().__init__()
        if in_chans < 2:
            raise ValueError(f"--arch gru: expected point sequences (N, T, C >= 2), got C={in_chans}")
        self.gru = nn.GRU(in_chans - 1, hidden_size, num_layers=num_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"--arch gru takes point sequences (N, T, C), got a tensor of shape {tuple(x.shape)}")
        lengths = x[..., -1].sum(dim=1).clamp(min=1).long().cpu()  # an empty drawing keeps one (zero) step
        packed = nn.utils.rnn.pack_padded_sequence(x[..., :-1], lengths, batch_first=True, enforce_sorted=False)
        _, hidden = self.gru(packed)  # (num_layers, N, hidden_size)
        return hidden[-1][:, :, None, None]



def adapt_input_conv(net: nn.Module, in_chans: int) -> nn.Conv2d:
    """Adapts the first 3-channel convolution of ``net`` to ``in_chans`` inputs, in place.

    Pretrained filters stay meaningful: for 1 channel the RGB filters are summed (a grey image then gives
    the same response as the RGB image with that grey in every channel); for C channels the RGB filters
    are tiled over C and rescaled by 3 / C (timm's ``adapt_input_conv``), plus an even correction when C
    is not a multiple of 3, so that the response to a constant image is unchanged.

    Args:
        net: the network; its first `nn.Conv2d` with 3 input channels is changed.
        in_chans: new number of input channels, >= 1.

    Returns:
        The adapted convolution.

    Raises:
        ValueError: no convolution with 3 input channels was found.
    """
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)
    if conv is None:
        raise ValueError("no 3-channel input convolution found to adapt")
    if in_chans == 3:
        return conv
    weight = conv.weight.detach()  # (O, 3, kh, kw)
    tiled = weight.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3.0 / in_chans)  # (O, C, kh, kw)
    # Spread what tiling loses (C not a multiple of 3) evenly, so the channel sum equals the RGB sum.
    # For C = 1 this is exactly the sum of the RGB filters.
    new = tiled + (weight.sum(dim=1, keepdim=True) - tiled.sum(dim=1, keepdim=True)) / in_chans
    conv.weight = nn.Parameter(new.contiguous())
    conv.in_channels = in_chans
    return conv


def _stride_two(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.stride) == (2, 2)


def _downsampling_stages(net: nn.Module) -> list[nn.Module] | None:
    """The modules that halve the feature map in the last stages of ``net``, in order, or None if not known:
    EfficientNet blocks with a stride-2 depthwise convolution, or the first block of a ResNet-style ``layerK``."""
    if hasattr(net, "_blocks"):  # efficientnet-pytorch
        return [block for block in net._blocks if _stride_two(block._depthwise_conv)]
    if all(hasattr(net, f"layer{k}") for k in (2, 3, 4)):  # torchvision ResNet, pretrainedmodels SENet/FBResNet
        return [getattr(net, f"layer{k}")[0] for k in (2, 3, 4)]
    return None


def set_output_stride(net: nn.Module, output_stride: int, arch: str = "") -> None:
    """Lowers the total downsampling of a CNN backbone from 32 to ``output_stride``, in place, by running its
    last one (16) or two (8) downsampling stages at stride 1.

    Small inputs keep a larger final feature map: a 32 px digit ends at 2 x 2 with 16 instead of 1 x 1, so the
    last stages' 3 x 3 and 5 x 5 kernels see neighbours again, the usual adaptation of ImageNet networks to
    CIFAR-sized images. Unlike timm's ``output_stride`` (meant for dense prediction), no dilation is added: the
    parameters are unchanged (any weights still load), the later stages' receptive fields shrink by the
    removed factor. Cost: the later stages run on 4x (16) or 16x (8) the positions; effnet-b0 on CPU at 32 px:
    16 was as fast as 32 before the cropped 'same' convolutions (`src.layers.sameconv`, which speed up 32 most), 8 now
    trains at about a third of 32's speed (``NOTES.md``).

    Args:
        net: an efficientnet-pytorch `EfficientNet`, or a ResNet / SENet / FBResNet (``layer2`` ... ``layer4``).
        output_stride: 32 (unchanged), 16 or 8.
        arch: the arch name, for error messages.

    Raises:
        ValueError: ``output_stride`` not in 8, 16, 32, or a backbone without known downsampling stages.
    """
    if output_stride not in choices.OUTPUT_STRIDES:
        strides = ", ".join(map(str, choices.OUTPUT_STRIDES))
        raise ValueError(f"--output-stride {output_stride}: expected one of {strides}")
    if output_stride == 32:
        return
    stages = _downsampling_stages(net)
    if stages is None:
        raise ValueError(
            f"--output-stride {output_stride}: not supported for --arch {arch or type(net).__name__}; "
            "EfficientNets (effnet-b*) and the ResNet / SE-ResNet(X)t families support it"
        )
    for stage in stages[len(stages) - {16: 1, 8: 2}[output_stride] :]:
        for module in stage.modules():
            if _stride_two(module):
                module.stride = (1, 1)
