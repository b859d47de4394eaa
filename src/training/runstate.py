"""What a checkpoint saves beyond the state dicts of the run's objects, so that a resumed run draws and steps
exactly as an uninterrupted one would have: each process's global random generators (dropout, drop-path) and
the gradients of an unfinished accumulation window. The generators the run owns are saved by their owners
(mixup) or derived from the position in the run (the data order and augmentation, `src.data.sampling`)."""

from __future__ import annotations

import collections
import logging
import random
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric

from src.utils import distributed

logger = logging.getLogger(__name__)
METRIC_STATE_KEY = "__metric_state_per_rank"  # the one key of an ignite 0.5 metric's state_dict


class RandomStates:
    """`state_dict` / `load_state_dict` of torch's (CPU and the process's own CUDA device's), numpy's and Python's
    global generators, one entry per process (`src.utils.distributed.per_rank`; each process loads its own rank's).

    Only the generator of ``device`` is saved, as a one-item list, and restored there: a process draws on its own GPU
    only, and a run continued where fewer GPUs are visible (one per SLURM task after a ``torchrun`` run) has no
    other device to restore. Checkpoints saved before held every visible GPU's state; the entry of the device's
    index is restored from those.

    The states hold only tensors, numbers, strings and tuples, so checkpoints load with ``weights_only=True``.

    Args:
        device: the device the process trains on.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "cuda": [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else [],
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": random.getstate(),
        }
        return {"per_rank": distributed.per_rank(state)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores this process's generators; with another number of processes than the checkpoint's, they are
        left as they are (logged: the run goes on, no longer draw for draw)."""
        state = distributed.own_rank(state_dict["per_rank"], "random generators")
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and self.device.type == "cuda":
            self._load_cuda(state["cuda"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state["python"])

    def _load_cuda(self, states: list[torch.Tensor]) -> None:
        """The device's generator from a one-item list (this format), or from the entry of its index in a list of
        every visible GPU's (checkpoints saved before); logged and left as it is when there is no such entry."""
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        if len(states) > 1 and index >= len(states):
            many, device = len(states), self.device
            logger.warning("the checkpoint holds %d GPUs' random generators, none of %s: starts afresh", many, device)
            return
        torch.cuda.set_rng_state(states[0] if len(states) == 1 else states[index], self.device)


class AccumulatedGradients:
    """`state_dict` / `load_state_dict` of the gradients ``model`` has accumulated in an unfinished window of
    ``--accumulation-steps`` (a window may span an epoch's end), per process; empty between windows."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        grads = [p.grad for p in self.model.parameters()]
        return {"per_rank": distributed.per_rank(grads if any(g is not None for g in grads) else [])}  # on the CPU

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        grads = distributed.own_rank(state_dict["per_rank"], "accumulated gradients")
        if grads:
            for param, grad in zip(self.model.parameters(), grads):
                param.grad = None if grad is None else grad.to(param.device)


class MetricState:
    """`state_dict` / `load_state_dict` of an ignite metric (its per-process state, ignite's own format), loaded
    only when the checkpoint has as many processes as the run, with its tensors moved to ``device`` (a checkpoint
    is read onto the CPU)."""

    def __init__(self, metric: Metric, device: torch.device | str):
        self.metric, self.device = metric, torch.device(device)

    def state_dict(self) -> dict[str, Any]:
        """ignite's format (``Metric.state_dict``), gathered with its tensors on the CPU (`distributed.per_rank`):
        ignite's own would pickle this process's CUDA tensors to every other one."""
        return collections.OrderedDict([(METRIC_STATE_KEY, distributed.per_rank(self.metric._state_dict_per_rank()))])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        (per_rank,) = state_dict.values()
        if distributed.own_rank(per_rank, "running training loss") is None:
            return
        self.metric.load_state_dict(state_dict)
        for name in self.metric._state_dict_all_req_keys:  # ignite's list of the metric's state attributes
            value = getattr(self.metric, name)
            if isinstance(value, torch.Tensor):
                setattr(self.metric, name, value.to(self.device))
