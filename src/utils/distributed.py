"""Several processes (DDP under ``torchrun``) through ``ignite.distributed``, and exact distributed evaluation.

``torchrun --nproc_per_node N -m src.train ...`` starts N processes; `launch` joins them into one process group
(`idist.Parallel`: nccl on GPUs, gloo on the CPU) and runs the command in each. Without ``torchrun`` the same
command is the single-process trainer: `launch` runs it in this process, and every helper below is the
identity (world size 1).

Exact evaluation (ours: ignite's and timm's distributed samplers pad the last shard with repeated samples, and
ignite's `all_gather` needs equal shapes): each process evaluates one contiguous block of the rows (`shard`),
none twice, and `gather_rows` concatenates the blocks in rank order, which is the rows' original order.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Sequence

import ignite.distributed as idist
import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map_only

logger = logging.getLogger(__name__)


def world_size() -> int:
    return idist.get_world_size()


def rank() -> int:
    return idist.get_rank()


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0)."""
    return idist.get_rank() == 0


def launched_processes() -> int:
    """How many processes the launcher started: torchrun's ``WORLD_SIZE``, or ``SLURM_NTASKS`` in a SLURM job step
    (``srun``, one task per GPU; ignite reads SLURM's variables); 1 for a plain command."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_STEP_ID" in os.environ:  # srun sets it; an sbatch script running python itself does not
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 1


def launched_rank() -> int:
    """This process's rank as the launcher set it (torchrun's ``RANK`` or srun's ``SLURM_PROCID``), before the
    process group exists; 0 for a plain command."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    return int(os.environ.get("SLURM_PROCID", "0")) if "SLURM_STEP_ID" in os.environ else 0


def backend_for(device: str) -> str | None:
    """The process-group backend for ``--device``: None for one process, nccl on CUDA, gloo on the CPU."""
    if launched_processes() <= 1:
        return None
    uses_cuda = device != "cpu" and torch.cuda.is_available()
    return "nccl" if uses_cuda else "gloo"


def launch(command: Callable[..., object], device: str, *args: object) -> None:
    """Runs ``command(*args)`` in every process ``torchrun`` started, in one process group (`idist.Parallel`,
    the backend for ``--device``), or once in this process without ``torchrun``.

    Raises:
        RuntimeError: ``--device cpu`` with several processes where CUDA cannot be hidden any more (see `hide_cuda`).
    """
    backend = backend_for(device)
    if backend is None:
        command(*args)
        return
    if device == "cpu":
        hide_cuda()
    with idist.Parallel(backend=backend) as parallel:
        parallel.run(_without_local_rank, command, *args)


def hide_cuda() -> None:
    """Makes this process see no GPU, so that ``--device cpu`` under ``torchrun`` means the CPU everywhere.

    ignite decides the device of a process group from ``torch.cuda.is_available()`` alone, whatever the backend:
    on a machine with GPUs a gloo group would pin each process to ``cuda:<local rank>`` (failing where there are
    fewer GPUs than processes), move every collective's tensors there (gloo gathers CUDA tensors on no GPU), and
    `idist.auto_model` would give DDP ``device_ids``. CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when it first
    counts the devices, so this must run before anything asks torch about CUDA.

    Raises:
        RuntimeError: CUDA was already initialised in this process and still shows its devices.
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if torch.cuda.is_available():
        raise RuntimeError(
            "--device cpu with several processes: CUDA was initialised before the process group and cannot be "
            "hidden any more; start the command with CUDA_VISIBLE_DEVICES= torchrun ..."
        )


def _without_local_rank(local_rank: int, command: Callable[..., object], *args: object) -> None:
    try:
        command(*args)
    finally:  # the run's engines, handlers and DDP model hold one another in reference cycles: freed while the
        gc.collect()  # process group exists (a DDP reducer freed after it is destroyed can abort the process at exit)


def shard(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous block of ``rows`` (sizes differ by at most one; no row in two blocks)."""
    return np.array_split(np.asarray(rows), world_size())[rank()]


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (blocks of rows (n_r, ...), n_r may differ) concatenated in rank order.

    Raises:
        ValueError: a process has no rows (more processes than rows to evaluate).
    """
    if world_size() == 1:
        return tensor
    device = idist.device()  # where the backend gathers (nccl: the GPU)
    counts = [int(n) for n in idist.all_gather(torch.tensor([len(tensor)], device=device))]
    if min(counts) == 0:
        raise ValueError(f"distributed evaluation: {sum(counts)} rows cannot fill {len(counts)} processes")
    padded = torch.zeros((max(counts), *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: len(tensor)] = tensor
    blocks = idist.all_gather(padded).split(max(counts))
    return torch.cat([block[:count] for block, count in zip(blocks, counts)]).to(tensor.device)


def barrier() -> None:
    """Waits for every process (nothing to wait for in one)."""
    if world_size() > 1:
        idist.barrier()


def broadcast_str(value: str) -> str:
    """Rank 0's ``value`` in every process (a run folder's name, decided once)."""
    return idist.broadcast(value, src=0, safe_mode=True) if world_size() > 1 else value


def min_over_ranks(value: int) -> int:
    """The smallest ``value`` over all processes (a batch size that fits every GPU)."""
    return int(idist.all_reduce(torch.tensor(value), op="MIN").item()) if world_size() > 1 else value


def sync_buffers(modules: Sequence[nn.Module]) -> None:
    """Copies rank 0's buffers (BatchNorm running statistics) into every process's copy of ``modules``, so that
    all processes evaluate the weights rank 0 saves (DDP keeps the parameters equal, not the buffers after a
    forward pass)."""
    if world_size() == 1:
        return
    for module in modules:
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


def wrap(module: nn.Module, sync_bn: bool = False, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in DistributedDataParallel (`idist.auto_model`, which broadcasts rank 0's parameters), with
    SyncBatchNorm when ``sync_bn``; the module itself in one process."""
    if world_size() == 1:
        return module
    return idist.auto_model(module, sync_bn=sync_bn, find_unused_parameters=find_unused_parameters)


def per_rank(state: object) -> list:
    """Every process's ``state``, in rank order (the shape ignite's metrics save theirs in); ``[state]`` in one.
    Tensors anywhere in ``state`` are moved to the CPU first: gathered as CUDA tensors (pickled, as
    `torch.distributed.all_gather_object` does) they would be unpickled onto the sender's GPU in every other
    process, opening a CUDA context there (pytorch/pytorch#150798)."""
    state = tree_map_only(torch.Tensor, lambda tensor: tensor.detach().cpu(), state)
    return idist.all_gather(state) if world_size() > 1 else [state]


def own_rank(states: list, what: str) -> object | None:
    """This process's entry of a `per_rank` list, or None (logged) when it was saved by another number of
    processes; ``what`` names it in the message."""
    if len(states) != world_size():
        logger.warning(
            "the checkpoint holds the %s of %d processes, this run has %d: they start afresh",
            what,
            len(states),
            world_size(),
        )
        return None
    return states[rank()]
