"""The order of the training samples: one permutation per epoch, a key per sample that seeds its augmentation,
and a start inside an epoch for a resumed run.

Nothing in torch, ignite or torchdata gives all three at once (see `EpochSampler`), so this small sampler is
our own; the permutation itself is torch's `DistributedSampler`.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DistributedSampler, Sampler


class EpochSampler(Sampler[tuple[int, int, int]]):
    """This process's share of the epoch's permutation, as ``(index, seed, epoch)`` keys, resumable mid-epoch.

    - The permutation of epoch ``e`` depends only on ``(seed, e)`` (torch's `DistributedSampler`, which also
      gives each of ``world_size`` processes its share, the same as with one process for ``world_size=1``).
    - Each key carries ``(seed, epoch)``, so the dataset seeds the sample's augmentation from
      ``(seed, epoch, index)`` (`src.augmentations.reseed`, or `src.data.batch_augment.key_uniforms` for a batch
      pipeline): the draws do not depend on which worker process decodes the sample, on the number of workers
      or processes, or on where the run was resumed.
    - ``num_batches`` (`limit`) caps the epoch (``--max-iters-per-epoch``): each epoch is one fresh pass, so a
      capped epoch too starts from a new permutation.
    - `start_at` makes the next pass begin ``batches`` into the epoch: a run resumed from a checkpoint taken
      inside an epoch reads the rest of that epoch, in the same order, without decoding the part it skips.

    ignite's `ReproducibleBatchSampler` skips by materialising the skipped batches' indices, but the worker seed
    (and so the augmentation) would still depend on the worker; torchdata's `StatefulDataLoader` restores the
    loader and its workers, but not the albumentations generators inside them.

    Args:
        size: rows of the dataset.
        batch_size: this process's batch size (the sampler yields whole batches only).
        seed: seed of the permutations and of the augmentation keys.
        num_batches: batches per epoch (None: all whole batches of the share).
        world_size, rank: the processes sharing each epoch, and this one.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        num_batches: int | None = None,
        world_size: int = 1,
        rank: int = 0,
    ):
        self._order = DistributedSampler(range(size), world_size, rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size, self.seed, self.epoch, self._start = batch_size, seed, 0, 0
        self.num_samples = 0
        self.limit(num_batches)

    def limit(self, num_batches: int | None) -> None:
        """At most ``num_batches`` batches per epoch (None: all whole batches of the share)."""
        whole = len(self._order) // self.batch_size
        self.num_samples = self.batch_size * (whole if num_batches is None else min(whole, num_batches))

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch of the next pass."""
        self.epoch = epoch
        self._order.set_epoch(epoch)

    def start_at(self, batches: int) -> None:
        """The next pass skips its first ``batches`` batches (once)."""
        self._start = batches * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        start, self._start = self._start, 0
        indices = list(self._order)[start : self.num_samples]
        return iter([(index, self.seed, self.epoch) for index in indices])

    def __len__(self) -> int:
        return self.num_samples
