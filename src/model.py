"""Model registry: ``--arch`` names to builders of a `Classifier` (backbone -> pool -> dropout -> linear).

Backbones come from efficientnet-pytorch (EfficientNet, Tan & Le 2019, https://arxiv.org/abs/1905.11946)
and pretrainedmodels (SE-ResNeXt / SENet, Hu et al. 2018, https://arxiv.org/abs/1709.01507; DenseNet,
Huang et al. 2017, https://arxiv.org/abs/1608.06993; ResNeXt, Inception-v4, Xception, NASNet, PNASNet,
PolyNet, ResNet: see `PRETRAINEDMODELS_ARCHS`). Every model takes (N, in_chans, H, W) float input of any
size >= 32 px (75 px for the Inception family and PolyNet, see `MIN_INPUT`) and returns logits
(N, num_classes); `Classifier.forward_features` gives the pooled embedding (N, num_features).

BatchNorm: efficientnet-pytorch defaults to a TF-style momentum of 0.99 (0.01 in PyTorch terms), which
leaves the running statistics far from the data for many epochs when training from scratch on small
data sets (eval accuracy at chance). We build EfficientNets with PyTorch's usual 0.1.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import nn

from src.activations import replace_activations
from src.config import ModelConfig, choices
from src.data.metadata import META_HIDDEN, MetaNet

EFFNET_BN_MOMENTUM_TF = 0.9  # efficientnet-pytorch stores 1 - (PyTorch momentum); 0.9 -> 0.1


class MultiHead(nn.Module):
    """One linear head per label column: (N, num_features) -> the heads' logits side by side (N, sum(sizes)).

    Args:
        num_features: input embedding size.
        sizes: classes per head (Bengali.AI: 168, 11, 7).
    """

    def __init__(self, num_features: int, sizes: Sequence[int]):
        super().__init__()
        self.sizes = list(sizes)
        self.heads = nn.ModuleList(nn.Linear(num_features, size) for size in self.sizes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features) for head in self.heads], dim=1)


class MarginHead(nn.Module):
    """A head whose class weights and margin belong to a pytorch-metric-learning loss (``margin_loss``): its forward
    gives the logits without the margin, which the training criterion adds (`src.losses.task_criterion`)."""

    margin_loss: nn.Module


class CosineHead(MarginHead):
    """Scaled cosine logits of a margin-based softmax head (ArcFace, Deng et al. 2019,
    https://arxiv.org/abs/1801.07698; CosFace / AM-Softmax, Wang et al. 2018, https://arxiv.org/abs/1801.09414):
    (N, num_features) -> ``scale * cos(angle between the embedding and each class weight)`` (N, num_classes).

    The class weights and the margin belong to pytorch-metric-learning's `ArcFaceLoss` / `CosFaceLoss`
    (``self.margin_loss``); the training criterion (`src.losses.MarginSoftmaxLoss`) applies its margin to these
    logits, so evaluation and prediction use plain scaled cosines. The logits are float32, computed in fp32 under
    any autocast (a bf16 cosine cannot tell angles below ~3.6 degrees from 0).

    Args:
        num_features: embedding size.
        num_classes: number of classes.
        kind: ``"arcface"`` (additive angular margin, in degrees as in pytorch-metric-learning; default 28.6 =
            0.5 rad) or ``"cosface"`` (additive cosine margin; default 0.35).
        margin: the margin; None takes the default of ``kind``.
        scale: the logit scale s (the papers use 64 for faces; 30 suits a few classes).
    """

    def __init__(
        self, num_features: int, num_classes: int, kind: str, margin: float | None = None, scale: float = 30.0
    ):
        super().__init__()
        from pytorch_metric_learning import losses

        loss_class = {"arcface": losses.ArcFaceLoss, "cosface": losses.CosFaceLoss}[kind]
        extra = {} if margin is None else {"margin": margin}
        self.margin_loss = loss_class(num_classes=num_classes, embedding_size=num_features, scale=scale, **extra)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # in fp32 whatever the autocast: in bf16 every cosine above 0.998 rounds to 1, where ArcFace's angle and its
        # gradient vanish
        with torch.autocast(features.device.type, enabled=False):
            return self.margin_loss.get_logits(features.float())


class LargeMarginHead(MarginHead):
    """The linear head of L-softmax (Liu, Wen, Yu, Yang, "Large-Margin Softmax Loss for Convolutional Neural
    Networks", ICML 2016, https://arxiv.org/abs/1612.02295): (N, num_features) -> ``W^T x`` = ``|W_j| |x| cos(theta_j)``
    (N, num_classes), a linear layer without bias.

    The class weights W (num_features, num_classes) and the margin formula belong to pytorch-metric-learning's
    `LargeMarginSoftmaxLoss` (``self.margin_loss``); the training criterion (`src.losses.LargeMarginSoftmaxLoss`)
    replaces the target's ``cos(theta)`` by ``psi(theta) = (-1)^k cos(m theta) - 2k``. The logits alone do not give
    the angle, so a training pass keeps its input's norms ``|x|`` (N,) in ``input_norm`` for that criterion.
    Evaluation and prediction use the plain logits, float32 under any autocast (as `CosineHead`'s).

    Args:
        num_features: embedding size.
        num_classes: number of classes.
        margin: the integer angle multiplier m, 1 (plain softmax) to 4; None: 4 (the library's default).

    Raises:
        ValueError: a margin that is not an integer from 1 to 4.
    """

    def __init__(self, num_features: int, num_classes: int, margin: float | None = None):
        super().__init__()
        from pytorch_metric_learning import losses

        margin = 4 if margin is None else margin
        if margin not in (1, 2, 3, 4):
            raise ValueError(f"--margin {margin}: L-softmax takes an integer angle multiplier m from 1 to 4")
        with warnings.catch_warnings():  # numpy 2's __array_wrap__ deprecation, from the library's scipy call
            warnings.simplefilter("ignore", DeprecationWarning)
            self.margin_loss = losses.LargeMarginSoftmaxLoss(num_classes, num_features, margin=int(margin))
        # the library draws W ~ N(0, 1): logits ~sqrt(num_features) times those of nn.Linear, which slowed training
        # to a crawl here; nn.Linear's own init instead (uniform, bound 1 / sqrt(num_features))
        nn.init.uniform_(self.margin_loss.W, -num_features**-0.5, num_features**-0.5)
        self.input_norm: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.float()  # fp32 whatever the autocast: the criterion recovers cos(theta) from these logits
        if self.training:
            self.input_norm = features.norm(dim=1)  # (N,)
        with torch.autocast(features.device.type, enabled=False):
            return features @ self.margin_loss.W.float()  # (N, num_classes)


MARGIN_HEADS = ("arcface", "cosface", "lsoftmax")


class Classifier(nn.Module):
    """A feature extractor followed by global average pooling and a head: [BatchNorm] -> dropout -> linear.

    Args:
        backbone: maps (N, C, H, W) to feature maps (N, num_features, h, w).
        num_features: channels of the backbone output.
        num_classes: number of output logits, or a list of classes per head (one linear layer each,
            outputs concatenated in that order, see `MultiHead`).
        config: the head's fields of the model group: ``drop_rate`` (dropout before the linear layer); ``head``:
            ``"linear"`` (dropout -> linear), ``"bn-dropout"`` (BatchNorm1d -> dropout -> linear, the head of the
            Recursion Cellular competition log), ``"arcface"`` / ``"cosface"`` (dropout -> a `CosineHead`; one head
            only) or ``"lsoftmax"`` (dropout -> a `LargeMarginHead`; one head only); ``margin`` of an ArcFace
            (degrees), CosFace (cosine) or L-softmax (integer m) head, None: the head's default; ``margin_scale``,
            the logit scale of an ArcFace or CosFace head. None: a plain linear head without dropout.
        meta: a `src.data.metadata.MetaNet` for image + metadata inputs: the model then takes ``(images (N, C, H, W),
            metadata (N, width))`` and its MLP's output (N, META_HIDDEN) is concatenated to the image embedding.

    Raises:
        ValueError: unknown head, or a margin head with several heads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int | Sequence[int],
        config: ModelConfig | None = None,
        meta: nn.Module | None = None,
    ):
        super().__init__()
        config = config or ModelConfig(drop_rate=0.0)
        head, margin = config.head, config.margin
        if head not in choices.HEADS:
            raise ValueError(f"--head {head!r}: unknown head; known: {', '.join(choices.HEADS)}")
        if head in MARGIN_HEADS and not isinstance(num_classes, int):
            raise ValueError(f"--head {head}: margin heads train one label column; use --head linear for several")
        self.backbone = backbone
        self.meta = meta
        num_features += META_HIDDEN if meta is not None else 0
        self.num_features = num_features  # of the embedding the head sees
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_norm = nn.BatchNorm1d(num_features) if head == "bn-dropout" else nn.Identity()
        self.dropout = nn.Dropout(config.drop_rate)
        if head == "lsoftmax":
            self.fc = LargeMarginHead(num_features, num_classes, margin)
        elif head in MARGIN_HEADS:
            self.fc = CosineHead(num_features, num_classes, head, margin, config.margin_scale)
        elif isinstance(num_classes, int):
            self.fc = nn.Linear(num_features, num_classes)
        else:
            self.fc = MultiHead(num_features, num_classes)

    def forward_features(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, C, H, W) -> pooled embedding (N, num_features); with metadata, ``(images, metadata (N, width))`` ->
        the pooled image embedding and the metadata MLP's output side by side.

        Raises:
            ValueError: images without their metadata for a model that takes both, or the other way round.
        """
        if isinstance(x, (tuple, list)) != (self.meta is not None):
            raise ValueError(
                "the model takes (images, metadata): the run was trained with --meta-cols"
                if self.meta is not None
                else "the model takes images only: the run was trained without --meta-cols"
            )
        if self.meta is None:
            return self.pool(self.backbone(x)).flatten(1)
        images, meta = x
        pooled = self.pool(self.backbone(images)).flatten(1)  # (N, image features)
        return torch.cat([pooled, self.meta(meta).to(pooled.dtype)], dim=1)  # (N, num_features)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(N, num_features) -> logits (N, num_classes)."""
        return self.fc(self.dropout(self.head_norm(features)))

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor], return_features: bool = False):
        """(N, C, H, W) -> logits (N, num_classes), or (logits, embedding (N, num_features)) with
        ``return_features`` (one call, so that DistributedDataParallel sees it)."""
        features = self.forward_features(x)
        logits = self.forward_head(features)
        return (logits, features) if return_features else logits


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


def _efficientnet(name: str, in_chans: int, pretrained: str | None, drop_path_rate: float) -> tuple[nn.Module, int]:
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


def _pretrainedmodels(name: str, in_chans: int, pretrained: str | None) -> tuple[nn.Module, int]:
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
    points of a drawing (`src.data.sources.strokes_to_sequence`); its last layer's final hidden state is the embedding.

    Input (N, T, C) float32 whose last column marks real points (1) and padding (0); the other C - 1 columns
    are the point features. Padding is skipped by packing the sequences to their lengths. Output
    (N, hidden_size, 1, 1), so that `Classifier`'s pooling and heads apply unchanged.

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


def _gru_backbone(config: ModelConfig) -> tuple:
    if config.pretrained == "imagenet":
        raise ValueError("--arch gru has no ImageNet weights; pass a checkpoint path or no --pretrained")
    return GRUBackbone(config.in_chans, config.hidden_size, config.num_layers), _as_is, config.hidden_size


def _as_is(net: nn.Module) -> nn.Module:
    return net


def _effnet_backbone(name: str, config: ModelConfig) -> tuple:
    net, num_features = _efficientnet(name, config.in_chans, config.pretrained, config.drop_path_rate)
    return net, EfficientNetFeatures, num_features


def _pm_backbone(name: str, config: ModelConfig) -> tuple:
    net, num_features = _pretrainedmodels(name, config.in_chans, config.pretrained)  # no stochastic depth here
    return net, partial(PretrainedModelsFeatures, final_relu=name in FINAL_RELU), num_features


# pretrainedmodels archs that build and train here; dpn*, bninception and vgg* do not fit the
# backbone -> pool -> linear shape (their `logits` use conv heads or fixed-size linear layers).
PRETRAINEDMODELS_ARCHS = (
    "se_resnext50_32x4d",
    "se_resnext101_32x4d",
    "se_resnet50",
    "se_resnet101",
    "se_resnet152",
    "senet154",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "resnext101_32x4d",
    "resnext101_64x4d",
    "inceptionv4",
    "inceptionresnetv2",
    "xception",
    "nasnetamobile",
    "pnasnet5large",
    "polynet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "cafferesnet101",
    "fbresnet152",
)
# Archs whose `logits` applies a ReLU to `features` before pooling (kept as a module here).
FINAL_RELU = {"densenet121", "densenet161", "densenet169", "densenet201", "xception", "nasnetamobile", "pnasnet5large"}
# Smallest square input (pixels) each arch accepts; 32 unless listed.
MIN_INPUT = {"inceptionv4": 75, "inceptionresnetv2": 75, "polynet": 75}

# name -> builder(model config: in_chans resolved, pretrained None or 'imagenet') -> (library net, feature wrapper,
# num_features); the library net is adapted (input channels, output stride, weights) before it is wrapped.
ARCHS: dict[str, Callable[..., tuple]] = {
    **{f"effnet-b{i}": partial(_effnet_backbone, f"efficientnet-b{i}") for i in range(8)},
    **{name: partial(_pm_backbone, name) for name in PRETRAINEDMODELS_ARCHS},
    "gru": _gru_backbone,
}
# Archs that read point sequences (N, T, C) instead of images: QuickDraw strokes (`--layout strokes`) only.
SEQUENCE_ARCHS = ("gru",)


def list_archs() -> list[str]:
    """The registered ``--arch`` names."""
    return list(ARCHS)


def describe_archs(names: Sequence[str] | None = None, num_classes: int = 1000, in_chans: int = 3) -> list[str]:
    """One line per arch: name, parameter count (millions, with a ``num_classes`` head) and smallest input.

    Builds each model with random weights, so all of them (``names=None``) take about 40 s on 2 CPU cores.
    """
    lines = []
    for name in names or list(ARCHS):
        if name in SEQUENCE_ARCHS:
            model = build_model(ModelConfig(arch=name, in_chans=4), num_classes)
            takes = "QuickDraw strokes (--layout strokes)"
        else:
            model = build_model(ModelConfig(arch=name, in_chans=in_chans), num_classes)
            takes = f"input >= {MIN_INPUT.get(name, 32)} px"
        params = sum(p.numel() for p in model.parameters()) / 1e6
        lines.append(f"{name:<22} {params:7.1f}M params  {takes}")
    return lines


def check_arch(arch: str) -> None:
    """Raises ValueError naming the known architectures when ``arch`` is not registered."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known archs: {', '.join(list_archs())}")


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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or pickled objects that weights_only refuses
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path}: not a weights file that loads with torch.load(weights_only=True) ({first})"
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (a mapping of parameter names to tensors)")
    return state


FILE_SIDES = ("in the file", "in the model")  # how a weights file's shapes are named beside the model's


def _load_library_weights(net: nn.Module, state: dict, path: Path) -> None:
    """Loads a state dict saved from the library's own model (what its 'imagenet' download holds)."""
    head_keys = ("_fc.", "last_linear.", "classifier.", "fc.")
    state = {k: v for k, v in state.items() if not k.startswith(head_keys)}
    check_shapes(state, net.state_dict(), str(path), complete=False, sides=FILE_SIDES)
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head_keys)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: does not match the architecture: missing keys {missing[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}"
        )


def reads_sequences(arch: str) -> bool:
    """Whether ``arch`` reads point sequences (N, T, C) instead of images: QuickDraw strokes (`--layout strokes`)."""
    return arch in SEQUENCE_ARCHS


def build_model(config: ModelConfig, num_classes: int | Sequence[int]) -> Classifier:
    """Builds a registered architecture.

    Args:
        config: the model group: ``arch`` (a name from `list_archs()`, e.g. ``"effnet-b0"``); ``in_chans`` (1 grey,
            3 RGB, any C; None: 3), to which pretrained stems are adapted by `adapt_input_conv`; ``pretrained``:
            None for random init, ``"imagenet"`` for the library's own download (needs internet), or a path to a
            local state dict, either of the library's model (e.g. the downloaded ImageNet file) or of a
            `Classifier` saved by this project (a ``checkpoint_*.pt`` or ``best_*.pt``); ``activation`` (e.g.
            ``"mish"``) replaces every ReLU/SiLU/Swish module; ``drop_rate`` before the final linear layer;
            ``drop_path_rate`` (EfficientNet blocks); ``head``, ``margin``, ``margin_scale`` (see `Classifier`);
            ``output_stride`` (see `set_output_stride`); ``hidden_size``, ``num_layers`` (``gru``).
        num_classes: number of output logits, or classes per head for several heads (`MultiHead`).

    Returns:
        A `Classifier` mapping (N, in_chans, H, W) float to logits (N, num_classes) (N, sum(num_classes) for heads).

    Raises:
        ValueError: unknown arch or activation, weights that do not fit the architecture, or an output stride the
            arch does not support.
        FileNotFoundError: ``pretrained`` is a path that does not exist.
        RuntimeError: the ImageNet weights could not be downloaded.
    """
    check_arch(config.arch)
    in_chans = config.in_chans or 3
    weights_path = Path(config.pretrained) if config.pretrained not in (None, "imagenet") else None
    state = _read_state_dict(weights_path) if weights_path is not None else None
    own = state is not None and any(k.startswith("backbone.") for k in state)  # a Classifier of ours: loaded last
    library = dataclasses.replace(config, in_chans=in_chans, pretrained=None if own else config.pretrained)
    net, wrap, num_features = _library_backbone(library)
    if library.pretrained is not None:
        if weights_path is not None:
            _load_library_weights(net, state, weights_path)
        adapt_input_conv(net, in_chans)
    set_output_stride(net, config.output_stride, config.arch)
    meta = MetaNet(config.meta_features, config.drop_rate) if config.meta_features else None
    model = Classifier(wrap(net), num_features, num_classes, config, meta)
    if config.activation:
        replace_activations(model, config.activation)
    if own:
        _load_own_weights(model, state, weights_path)
    return model


def _library_backbone(config: ModelConfig) -> tuple:
    """``ARCHS[config.arch](config)``; a failed ImageNet download says what to do instead."""
    try:
        return ARCHS[config.arch](config)
    except (OSError, RuntimeError) as error:
        if config.pretrained == "imagenet":
            raise RuntimeError(
                f"could not download the ImageNet weights of {config.arch} ({error}); download them where there is "
                "internet and pass the file with --pretrained PATH"
            ) from error
        raise


def shape_mismatch(saved: dict, own: dict) -> tuple[str, tuple, tuple] | None:
    """The first tensor of ``saved`` that ``own`` (a model's state dict) also has, in another shape:
    ``(name, saved shape, own shape)``; None when every shared name fits."""
    for key, value in saved.items():
        if key in own and torch.is_tensor(own[key]) and tuple(own[key].shape) != tuple(getattr(value, "shape", ())):
            return key, tuple(getattr(value, "shape", ())), tuple(own[key].shape)
    return None


def check_shapes(
    saved: dict, own: dict, what: str, complete: bool = True, sides: tuple[str, str] = ("there", "here")
) -> None:
    """Stops with one line when saved tensors do not fit a model: one in another shape, or (``complete``) one that
    the model has and ``saved`` lacks.

    Args:
        saved: the state dict read (a checkpoint's model, a weights file's tensors).
        own: the model's state dict.
        what: what ``saved`` came from, as the message names it ("the checkpoint", a path).
        complete: ``saved`` must hold every tensor of ``own`` (a training state or a trained model; a weights file
            to fine-tune from may lack the model's head).
        sides: the words after the two shapes: ``saved``'s, then the model's.

    Raises:
        ValueError: names the tensor, both shapes, and the usual causes.
    """
    missing = next((name for name in own if name not in saved), None) if complete else None
    if missing is not None:
        raise ValueError(f"{what} has no tensor {missing!r}: saved from another arch or model settings")
    mismatch = shape_mismatch(saved, own)
    if mismatch:
        name, there, here = mismatch
        raise ValueError(
            f"{what} does not fit this model: {name!r} is {there} {sides[0]} and {here} {sides[1]} (another arch, "
            "number of classes or of input channels?)"
        )


def _load_own_weights(model: Classifier, state: dict, path: Path) -> None:
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and torch.is_tensor(v) and own[k].shape != v.shape]
    head_keys = ("fc.", "head_norm.")  # a new head (another num_classes or head kind) may replace the old one
    body = {k: v for k, v in state.items() if not k.startswith(head_keys)}
    check_shapes(body, own, str(path), complete=False, sides=FILE_SIDES)
    state = {k: v for k, v in state.items() if k not in mismatched}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head_keys)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(head_keys)]
    if missing or unexpected:
        raise ValueError(f"{path}: does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
