"""--batch-size auto (`src.training.batch_size`): the search, the trials against an allocator that runs out of memory
at a boundary, the effective batch size, the refusal on CPU, and the one-line answer to running out of memory during
training with the last checkpoint intact."""

import pytest
import torch
import yaml
from ignite.engine import Events
from torch import nn

import src.training.trainer
from src.config import Config
from src.targets import Head, Task
from src.train import main
from src.training.batch_size import (
    accumulation_for,
    largest_batch,
    resolve_batch,
    search,
    trial_fits,
    with_margin,
)
from src.utils.errors import is_out_of_memory
from tests.helpers import TINY, TinyClassifier, epoch_checkpoint


class Allocator(nn.Module):
    """Wraps a model; a forward pass of more than ``boundary`` images raises ``error`` (the allocator's
    out-of-memory error by default, as CUDA's caching allocator does when the activations do not fit), or more than
    ``eval_boundary`` images without gradients."""

    def __init__(self, model: nn.Module, boundary: int, error=None, eval_boundary: int | None = None):
        super().__init__()
        self.model, self.boundary, self.batches = model, boundary, []
        self.eval_boundary = eval_boundary or boundary
        self.error = error or (lambda n: torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} images"))

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > (self.boundary if torch.is_grad_enabled() else self.eval_boundary):
            raise self.error(x.shape[0])
        return self.model(x)


@pytest.mark.parametrize("boundary, limit", [(1, 4096), (7, 4096), (48, 4096), (1000, 4096), (5000, 4096), (3, 3)])
def test_search_doubles_then_bisects_to_the_boundary(boundary, limit):
    tried = []

    def fits(size):
        tried.append(size)
        return size <= boundary

    found = search(fits, limit)
    assert found <= min(boundary, limit) and found >= min(boundary, limit) * 15 / 16
    assert len(tried) <= 2 * (limit.bit_length() + 1)  # logarithmic
    assert tried[0] == 2 and (tried[:3] == [2, 4, 8] or min(boundary, limit) < 8)  # doubling first


def test_search_halves_from_the_start_and_finds_none_when_nothing_fits():
    assert search(lambda size: size <= 1, 64, start=8) == 1
    assert search(lambda size: False, 64) == 0


def test_the_margin_keeps_nine_tenths_in_multiples_of_eight():
    assert [with_margin(n) for n in (1, 10, 17, 100, 1000)] == [1, 9, 15, 88, 896]


def test_a_trial_that_runs_out_of_memory_says_so_and_frees_the_gradients():
    model = Allocator(TinyClassifier(in_chans=3, num_classes=4), boundary=24)
    config = Config.of(channels_last=False)
    assert trial_fits(model, 16, (3, 8, 8), config, torch.device("cpu"))
    assert all(p.grad is None for p in model.parameters())
    assert not trial_fits(model, 32, (3, 8, 8), config, torch.device("cpu"))


def test_the_largest_batch_is_found_against_the_allocator_boundary():
    model = Allocator(TinyClassifier(in_chans=3, num_classes=4), boundary=300)
    found, tried = largest_batch(model, (3, 8, 8), Config.of(), torch.device("cpu"), limit=4500)
    assert 300 * 15 / 16 <= found <= 300 and tried == model.batches
    assert with_margin(found) <= 270


CUDNN = "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input."
CUBLAS = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


def test_cudnn_and_cublas_allocation_failures_count_as_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError(CUDNN)) and is_out_of_memory(RuntimeError(CUBLAS))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)"))
    assert not is_out_of_memory(ValueError("CUDA out of memory"))  # only the errors torch raises


@pytest.mark.parametrize("message", [CUDNN, CUBLAS])
def test_the_search_stops_at_cudnn_and_cublas_failures_and_raises_other_errors(message):
    model = Allocator(TinyClassifier(in_chans=3, num_classes=4), boundary=40, error=lambda n: RuntimeError(message))
    found, _ = largest_batch(model, (3, 8, 8), Config.of(), torch.device("cpu"), limit=4096)
    assert 40 * 15 / 16 <= found <= 40
    broken = Allocator(TinyClassifier(in_chans=3, num_classes=4), 40, error=lambda n: RuntimeError("a real bug"))
    with pytest.raises(RuntimeError, match="a real bug"):
        largest_batch(broken, (3, 8, 8), Config.of(), torch.device("cpu"), limit=4096)


def test_the_evaluation_batch_is_searched_without_gradients_from_the_training_batch():
    model = Allocator(TinyClassifier(in_chans=3, num_classes=4), boundary=40, eval_boundary=130)
    config = Config.of(channels_last=False)
    assert trial_fits(model, 130, (3, 8, 8), config, torch.device("cpu"), train=False)
    assert not trial_fits(model, 130, (3, 8, 8), config, torch.device("cpu"))
    found, tried = largest_batch(model, (3, 8, 8), config, torch.device("cpu"), limit=4 * 36, train=False, start=36)
    assert 130 * 15 / 16 <= found <= 130 and tried[0] == 36 and not model.training


def test_auto_on_cpu_says_it_needs_a_gpu_and_effective_batch_size_sets_the_accumulation():
    task = Task("single", (Head("label", ("a", "b")),))
    with pytest.raises(ValueError, match="--batch-size auto: finds the largest batch that fits a GPU; on cpu"):
        resolve_batch(Config.of(batch_size="auto"), task, 1, 100, torch.device("cpu"))
    resolved = resolve_batch(Config.of(batch_size=32, effective_batch_size=96), task, 1, 100, torch.device("cpu"))
    assert (resolved.loader.batch_size, resolved.step.accumulation_steps) == (32, 3)
    assert [accumulation_for(n, 64) for n in (10, 64, 100, 256)] == [1, 1, 2, 4]


def test_out_of_memory_during_training_names_the_batch_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    flags = [*TINY, "--no-pictures", "--output-dir", str(tmp_path), "--run-name", "oom"]
    assert main([*flags, "--epochs", "1"]) == 0
    first = epoch_checkpoint(tmp_path / "oom", 1)
    saved = first.read_bytes()
    attach = src.training.trainer.attach_stopping

    def attach_with_oom(trainer, *args, **kwargs):
        def no_memory():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        trainer.add_event_handler(Events.ITERATION_STARTED(once=7), no_memory)  # inside epoch 2
        attach(trainer, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(src.training.trainer, "attach_stopping", attach_with_oom)
        assert main([*flags, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines == [
        "error: CUDA out of memory at --batch-size 32 and --img-size 32: pass --batch-size auto (the largest batch "
        "that fits) or a smaller --batch-size with --accumulation-steps to keep the update; the last checkpoint is "
        "intact (the same command continues from it)"
    ], err
    assert first.read_bytes() == saved
    assert main([*flags, "--epochs", "2"]) == 0  # the same command continues from epoch 1's checkpoint
    assert epoch_checkpoint(tmp_path / "oom", 2).exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the real search needs CUDA")
def test_auto_finds_a_batch_on_the_gpu_and_trains(tmp_path):
    flags = [*TINY, "--batch-size", "auto", "--effective-batch-size", "256", "--epochs", "1", "--device", "cuda"]
    assert main([*flags, "--output-dir", str(tmp_path), "--run-name", "auto"]) == 0
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    batch = saved["loader"]["batch_size"]  # the number found, so that a resume takes the same batches
    assert isinstance(batch, int) and batch >= 8
    assert saved["step"]["accumulation_steps"] == accumulation_for(256, batch)
