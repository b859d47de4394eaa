"""Batches delivered on the model's device, made ready while the previous step runs: timm's `PrefetchLoader`
(``timm/data/loader.py``) for our loaders, whose pixels and draws become images in `src.data.batch_augment.DeviceStage`.

torch's DataLoader ends on the host (``pin_memory`` copies into page-locked memory in a thread); ignite's
`convert_tensor` copies on the step's own stream, so the copy and the device-side augmentation would wait behind the
step before. On CUDA each batch is copied (non-blocking, from pinned memory) and finished on a side stream one batch
ahead, and the step's stream waits for that stream only when it takes the batch; nothing here waits for the GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils._pytree import tree_flatten
from torch.utils.data import DataLoader

from src.data.batch_augment import DeviceStage


class DeviceLoader:
    """Iterates ``loader`` with each batch on ``device``, its pixels made images by ``stage``.

    It stands where the DataLoader stood (an engine's data, ``len``, ``sampler``, ``dataset``, ``batch_size``,
    ``num_workers``); ``loader`` is the DataLoader itself.

    Args:
        loader: a DataLoader (``pin_memory=True`` on CUDA, so that the copies do not wait).
        device: where the model runs.
        stage: what happens on the device (`DeviceStage`).
    """

    def __init__(self, loader: DataLoader, device: torch.device | str, stage: DeviceStage):
        self.loader, self.device, self.stage = loader, torch.device(device), stage

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self):
        return self.loader.sampler

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def batch_size(self) -> int | None:
        return self.loader.batch_size

    @property
    def num_workers(self) -> int:
        return self.loader.num_workers

    def __iter__(self) -> Iterator:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield self.stage(batch, self.device)
            return
        yield from self._prefetched()

    def _prefetched(self) -> Iterator:
        """One batch ahead on a side stream: its copy and device stage overlap the step of the batch before."""
        side, step = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)
        batches = iter(self.loader)
        ready = self._start(next(batches, None), side)
        while ready is not None:
            step.wait_stream(side)  # the step's kernels run after the batch's copy and stage
            for tensor in tree_flatten(ready)[0]:
                if isinstance(tensor, torch.Tensor):
                    tensor.record_stream(step)  # made on the side stream, used on the step's: not reused before
            batch, ready = ready, self._start(next(batches, None), side)
            yield batch

    def _start(self, batch, side: torch.cuda.Stream):
        if batch is None:
            return None
        with torch.cuda.stream(side):
            return self.stage(batch, self.device, non_blocking=True)
