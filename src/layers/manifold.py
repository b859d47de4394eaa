"""Manifold mixup: the mix happens after a randomly drawn stage of the backbone instead of on the input.

Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz, Bengio, "Manifold Mixup: Better Representations by
Interpolating Hidden States", ICML 2019, https://arxiv.org/abs/1806.05236. Stage 0 is the input (plain mixup);
stage s > 0 is the output of the s-th stage of the backbone, where a stage is the last layer at one spatial
resolution. No well-kept library mixes inside arbitrary backbones (timm and fastai mix inputs only), so this module
finds the stages itself, for every CNN family of the registry at once:

- the backbone's trunk (efficientnet-pytorch's network, pretrainedmodels' ``features``) is run once on two images
  with a forward hook on each of its top-level layers (blocks, cells, ``layerK``, ...);
- a layer can carry a stage only if nothing after it reads a tensor made before it (NASNet's and PNASNet's cells
  read the two previous cells' outputs, so only their input qualifies);
- of the layers that qualify, the last one at each spatial size ends a stage. The last stage (whose output is
  pooled into the embedding) is not drawn, as in the paper, which mixes early and middle layers.

The mix itself is a one-shot forward hook armed for the next training forward pass: it replaces the stage's output
(N, C, h, w) by the same convex combination of rows that mixes the targets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from src.layers.backbones import GRUBackbone

logger = logging.getLogger(__name__)
NO_STAGES = "--mixup-at features: --arch gru reads point sequences (no stages); use --mixup-at input"
COMPILED = "--mixup-at features arms a hook per iteration, which --compile would recompile; drop one"



def trunk_of(backbone: nn.Module) -> nn.Module:
    """The module whose top-level layers run in sequence: efficientnet-pytorch's network, pretrainedmodels'
    ``features`` when it is a module (DenseNet, Inception-v4) or else the network, or the backbone itself.

    Raises:
        ValueError: a backbone that reads point sequences (``--arch gru``): it has no stages to mix.
    """
    if isinstance(backbone, GRUBackbone):
        raise ValueError(NO_STAGES)
    net = getattr(backbone, "net", backbone)
    features = getattr(net, "features", None)
    return features if isinstance(features, nn.Module) else net


def _layers(module: nn.Module) -> list[nn.Module]:
    """Top-level layers of ``module``; containers that are never called (a ModuleList or ModuleDict without a
    ``forward`` of its own, such as efficientnet-pytorch's ``_blocks``) are opened."""
    layers = []
    for child in module.children():
        never_called = isinstance(child, (nn.ModuleList, nn.ModuleDict)) and type(child).forward is nn.Module.forward
        layers.extend(_layers(child) if never_called else [child])
    return layers


def _tensors(values) -> list[torch.Tensor]:
    """The tensors in a layer's arguments, lists and dicts opened (a DenseNet layer reads a list)."""
    if isinstance(values, torch.Tensor):
        return [values]
    if isinstance(values, dict):
        values = list(values.values())
    if isinstance(values, (list, tuple)):
        return [t for value in values for t in _tensors(value)]
    return []


@torch.no_grad()
def find_stages(backbone: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The layers of ``backbone`` whose outputs end its stages, in order, the last one (the trunk's output) left out.

    Args:
        backbone: a registered CNN backbone (see `trunk_of`); run once in eval mode, its mode restored after.
        x: a few input images (n, C, H, W) float, on the model's device.

    Returns:
        Stage layers 1 .. S; stage 0 (the input) is implicit. Empty when only the input qualifies.
    """
    trunk = trunk_of(backbone)
    fired: list[tuple[nn.Module, list[torch.Tensor], torch.Tensor | None]] = []

    def record(module, args, kwargs, output):
        fired.append((module, _tensors(args) + _tensors(kwargs), output if isinstance(output, torch.Tensor) else None))

    handles = [layer.register_forward_hook(record, with_kwargs=True) for layer in _layers(trunk)]
    was_training = backbone.training
    backbone.eval()
    try:
        backbone(x)  # the recorded tensors stay referenced, so their ids are unique
    finally:
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
    counts: dict[int, int] = {}
    for module, _, _ in fired:
        counts[id(module)] = counts.get(id(module), 0) + 1
    earlier = {id(x)}  # tensors made before the candidate layer: reading one later skips over it
    qualifying: list[tuple[nn.Module, tuple[int, ...]]] = []
    for i, (module, _, output) in enumerate(fired):
        read_later = {id(t) for _, inputs, _ in fired[i + 1 :] for t in inputs}
        if counts[id(module)] == 1 and output is not None and output.ndim == 4 and not read_later & earlier:
            qualifying.append((module, tuple(output.shape[-2:])))
        if output is not None:
            earlier.add(id(output))
    ends = [module for (module, size), nxt in zip(qualifying, qualifying[1:] + [(None, None)]) if size != nxt[1]]
    return ends[:-1]


class StageMixer:
    """Draws a stage of a model's backbone and mixes that stage's output in the next training forward pass.

    Args:
        model: a `src.model.Classifier` with a CNN backbone (the plain model, not its DistributedDataParallel or
            compiled wrapper; hooks on its layers fire through those).

    Raises:
        ValueError: a backbone without stages (``--arch gru``).
    """

    def __init__(self, model: nn.Module):
        trunk_of(model.backbone)  # refuses sequence models now, not at the first step
        self.model = model
        self.stages: list[nn.Module] | None = None
        self.armed: int | None = None  # the stage whose mix waits for the next training pass
        self._handle = None

    def draw(self, x: torch.Tensor, rng: np.random.Generator) -> int:
        """A stage uniform over 0 (the input) .. S, from ``rng``; the stages are found on the first call from
        two images of ``x`` (N, C, H, W)."""
        if self.stages is None:
            self.stages = find_stages(self.model.backbone, x[:2])
            logger.info("manifold mixup: %d stages besides the input", len(self.stages))
        return int(rng.integers(len(self.stages) + 1))

    def arm(self, stage: int, weights: Sequence[float], index: Sequence[torch.Tensor]) -> None:
        """Mixes the output (N, C, h, w) of stage ``stage`` >= 1 in the next training forward pass only:
        ``sum_j weights[j] * output[index[j]]``. An armed mix that never fired (the forward pass failed) is
        replaced; evaluation passes (the model in eval mode) are never mixed."""
        self.disarm()

        def mix(module, inputs, output):
            if not self.model.training:
                return None
            self.disarm()
            return sum(float(w) * output[i] for w, i in zip(weights, index))

        self._handle = self.stages[stage - 1].register_forward_hook(mix)
        self.armed = stage

    def disarm(self) -> None:
        """Removes an armed mix that has not fired."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = self.armed = None
