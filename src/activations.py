"""Activation look-up by name and in-place swapping of a model's activations.

Mish: Misra, "Mish: A Self Regularized Non-Monotonic Neural Activation Function", 2019,
https://arxiv.org/abs/1908.08681. We use PyTorch's own `torch.nn.Mish` (x * tanh(softplus(x))).
"""

from __future__ import annotations

from collections.abc import Callable

from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "mish": nn.Mish,
    "relu": lambda: nn.ReLU(inplace=True),
    "silu": nn.SiLU,
}

# Module types that `replace_activations` swaps: ReLU family, SiLU, and efficientnet-pytorch's Swish.
REPLACEABLE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.SiLU, Swish, MemoryEfficientSwish)


def get_activation(name: str) -> Callable[[], nn.Module]:
    """Returns a factory of the named activation module.

    Raises:
        ValueError: unknown name; the message lists the known names.
    """
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def replace_activations(module: nn.Module, name: str) -> int:
    """Replaces, in place, every ReLU / ReLU6 / SiLU / Swish / MemoryEfficientSwish submodule.

    Each replaced module gets its own new instance. Activations applied functionally inside a
    ``forward`` (not as modules) are out of reach; the supported architectures use modules.

    Args:
        module: the model to modify.
        name: activation name, one of `ACTIVATIONS` (e.g. ``"mish"``).

    Returns:
        The number of modules replaced.

    Raises:
        ValueError: unknown activation name.
    """
    factory = get_activation(name)
    count = 0
    for parent in module.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, REPLACEABLE):
                setattr(parent, child_name, factory())
                count += 1
    return count
