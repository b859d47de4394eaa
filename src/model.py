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

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.activations import replace_activations
from src.config import ModelConfig, choices
from src.data.metadata import META_HIDDEN, MetaEncoder, MetaNet
from src.layers.backbones import (
    EfficientNetFeatures,
    GRUBackbone,
    PretrainedModelsFeatures,
    adapt_input_conv,
    efficientnet_net,
    pretrainedmodels_net,
    set_output_stride,
)
from src.layers.heads import MARGIN_HEADS, CosineHead, LargeMarginHead, MultiHead

# What an ``ARCHS`` builder returns: (the library's network, the wrapper that makes it a feature extractor of
# (N, num_features, h, w) maps, num_features).
Backbone = tuple[nn.Module, Callable[[nn.Module], nn.Module], int]


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

    def forward(
        self, x: torch.Tensor | Sequence[torch.Tensor], return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) -> logits (N, num_classes), or (logits, embedding (N, num_features)) with
        ``return_features`` (one call, so that DistributedDataParallel sees it)."""
        features = self.forward_features(x)
        logits = self.forward_head(features)
        return (logits, features) if return_features else logits


def _gru_backbone(config: ModelConfig) -> Backbone:
    if config.pretrained == "imagenet":
        raise ValueError("--arch gru has no ImageNet weights; pass a checkpoint path or no --pretrained")
    return GRUBackbone(config.in_chans, config.hidden_size, config.num_layers), _as_is, config.hidden_size


def _as_is(net: nn.Module) -> nn.Module:
    return net


def _effnet_backbone(name: str, config: ModelConfig) -> Backbone:
    net, num_features = efficientnet_net(name, config.in_chans, config.pretrained, config.drop_path_rate)
    return net, EfficientNetFeatures, num_features


def _pm_backbone(name: str, config: ModelConfig) -> Backbone:
    net, num_features = pretrainedmodels_net(name, config.in_chans, config.pretrained)  # no stochastic depth here
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
ARCHS: dict[str, Callable[[ModelConfig], Backbone]] = {
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


def _load_library_weights(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
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


def build_model(
    config: ModelConfig, num_classes: int | Sequence[int], meta_encoder: MetaEncoder | None = None
) -> Classifier:
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
        meta_encoder: with ``meta_features``, the train fold's metadata encoding (`src.data.metadata.MetaEncoder`),
            which the metadata MLP keeps and every checkpoint saves.

    Returns:
        A `Classifier` mapping (N, in_chans, H, W) float to logits (N, num_classes) (N, sum(num_classes) for heads).

    Raises:
        ValueError: unknown arch or activation, weights that do not fit the architecture, or an output stride the
            arch does not support.
        FileNotFoundError: ``pretrained`` is a path that does not exist.
        ConnectionError: the ImageNet weights could not be downloaded (no internet): the message says what to do.
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
    meta = MetaNet(config.meta_features, config.drop_rate, meta_encoder) if config.meta_features else None
    model = Classifier(wrap(net), num_features, num_classes, config, meta)
    if config.activation:
        replace_activations(model, config.activation)
    if own:
        _load_own_weights(model, state, weights_path)
        if meta is not None:  # the weights' run saved its own fold's encoding: this run's train fold decides
            meta.encoder = meta_encoder
    return model


def _library_backbone(config: ModelConfig) -> Backbone:
    """``ARCHS[config.arch](config)``; a failed ImageNet download says what to do instead, as a `ConnectionError`
    (an `OSError`: one line, exit 2 from every command)."""
    try:
        return ARCHS[config.arch](config)
    except (OSError, RuntimeError) as error:
        if config.pretrained == "imagenet":
            raise ConnectionError(
                f"could not download the ImageNet weights of {config.arch} ({error}); download them where there is "
                "internet and pass the file with --pretrained PATH"
            ) from error
        raise


def shape_mismatch(
    saved: Mapping[str, Any], own: Mapping[str, Any]
) -> tuple[str, tuple[int, ...], tuple[int, ...]] | None:
    """The first tensor of ``saved`` that ``own`` (a model's state dict) also has, in another shape:
    ``(name, saved shape, own shape)``; None when every shared name fits."""
    for key, value in saved.items():
        if key in own and torch.is_tensor(own[key]) and tuple(own[key].shape) != tuple(getattr(value, "shape", ())):
            return key, tuple(getattr(value, "shape", ())), tuple(own[key].shape)
    return None


def check_shapes(
    saved: Mapping[str, Any],
    own: Mapping[str, Any],
    what: str,
    complete: bool = True,
    sides: tuple[str, str] = ("there", "here"),
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


def _load_own_weights(model: Classifier, state: dict[str, torch.Tensor], path: Path) -> None:
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
