"""The two kinds of error every command treats apart from a failure: a planned end before the work is done
(`CleanExit`: a clean stop of training, reported without a traceback) and the GPU running out of memory
(`is_out_of_memory`), which `src.cli.run_cli` turns into one line with the flags that save memory."""

from __future__ import annotations

import torch


class CleanExit(Exception):
    """A planned end before the work is done (`src.training.stopping.Stopped`): `src.cli.run_cli` prints `message`
    and exits with ``exit_code``, no traceback."""

    exit_code = 1
    status = "stopped"  # the run's status (`src.tracking.report`)

    def message(self) -> str:
        return str(self)


class Pruned(CleanExit):
    """A sweep's pruner ended the trial's run early: its metric trailed the other trials' (`src.tuning.study`)."""

    status = "pruned"


OUT_OF_MEMORY_MESSAGES = (
    "CUDA out of memory",  # the caching allocator (torch.OutOfMemoryError)
    "CUDA error: out of memory",  # a kernel's own allocation
    "CUDNN_STATUS_NOT_SUPPORTED",  # cuDNN finds no algorithm whose workspace fits
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",  # cuBLAS cannot allocate its handle's workspace
)
"""What the out-of-memory condition looks like near the limit: torch raises `torch.OutOfMemoryError` for its
allocator, but cuDNN and cuBLAS report theirs as a plain RuntimeError (PyTorch Lightning's ``is_oom_error`` treats
them the same way)."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` means "the GPU ran out of memory" (`OUT_OF_MEMORY_MESSAGES`), not another failure."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in OUT_OF_MEMORY_MESSAGES)
