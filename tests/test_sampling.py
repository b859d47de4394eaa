"""The train order: one permutation per epoch from (seed, epoch), per-sample augmentation keys, resuming inside an
epoch, and augmentations that do not depend on the worker that decodes them."""

import numpy as np
import torch

from src.config import LoaderConfig
from src.data.folds import assign_folds, split_indices
from src.data.sampling import EpochSampler
from src.loaddata import build_loaders
from tests.helpers import fake_data


def test_each_epoch_has_its_own_permutation_from_seed_and_epoch():
    sampler = EpochSampler(20, batch_size=4, seed=3)
    first = list(sampler)
    assert sorted(i for i, _, _ in first) == list(range(20)) and {k[1:] for k in first} == {(3, 0)}
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for i, _, _ in second] != [i for i, _, _ in first] and {k[1:] for k in second} == {(3, 1)}
    again = EpochSampler(20, batch_size=4, seed=3)
    again.set_epoch(1)
    assert list(again) == second


def test_start_at_skips_whole_batches_once_and_limit_caps_the_epoch():
    sampler = EpochSampler(22, batch_size=4, seed=0)
    whole = list(sampler)
    assert len(sampler) == len(whole) == 20  # whole batches only
    sampler.start_at(2)
    assert list(sampler) == whole[8:]
    assert list(sampler) == whole  # once
    sampler.limit(3)
    assert len(sampler) == 12 and list(sampler) == whole[:12]


def test_processes_share_the_one_process_permutation():
    shares = [list(EpochSampler(16, batch_size=2, seed=5, world_size=2, rank=r)) for r in (0, 1)]
    assert sorted(i for share in shares for i, _, _ in share) == list(range(16))
    assert not {i for i, _, _ in shares[0]} & {i for i, _, _ in shares[1]}


def _first_batches(num_workers, epoch=0, start=0):
    data = fake_data(60, num_classes=3)
    train_idx, valid_idx = split_indices(assign_folds(data, 3, seed=0), 0, seed=0)
    config = LoaderConfig(img_size=16, batch_size=8, aug="medium", num_workers=num_workers)
    loaders = build_loaders(data, (train_idx, valid_idx), config, seed=7)
    loaders.train.sampler.set_epoch(epoch)
    loaders.train.sampler.start_at(start)
    batches = [x for x, _ in loaders.train]
    loaders.close()  # the workers now, not at a garbage collection
    return batches


def test_augmentations_do_not_depend_on_workers_or_on_where_an_epoch_resumes():
    in_process = _first_batches(0, epoch=1)
    assert len(in_process) == 5
    two_workers = _first_batches(2, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(in_process, two_workers, strict=True))
    resumed = _first_batches(2, epoch=1, start=3)
    assert all(torch.equal(a, b) for a, b in zip(in_process[3:], resumed, strict=True))
    assert not torch.equal(_first_batches(0, epoch=0)[0], in_process[0])  # another epoch, other draws
    assert not np.allclose(in_process[0][0].numpy(), in_process[0][1].numpy())
