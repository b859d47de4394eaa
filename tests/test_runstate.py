"""What a checkpoint saves beyond the state dicts (`src.training.runstate`): the random generators of the process's own
GPU (restored where fewer GPUs are visible), tensors gathered on the CPU, and ignite's metric format."""

import random

import numpy as np
import pytest
import torch
from ignite.metrics import Average

from src.training.runstate import AccumulatedGradients, MetricState, RandomStates
from src.utils import distributed


class FakeCuda:
    """torch.cuda's generator calls on a machine with ``gpus`` GPUs, recorded (no GPU needed)."""

    def __init__(self, monkeypatch, gpus: int):
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(gpus)}
        self.set: list[tuple[int, int]] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: self.states[torch.device(device).index])
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states.values()))
        monkeypatch.setattr(
            torch.cuda, "set_rng_state", lambda state, device: self.set.append((torch.device(device).index, state[0]))
        )


def test_only_the_own_gpus_generator_is_saved_and_restored(monkeypatch):
    cuda = FakeCuda(monkeypatch, gpus=4)
    saved = RandomStates(torch.device("cuda", 2)).state_dict()
    (state,) = saved["per_rank"]
    assert len(state["cuda"]) == 1 and state["cuda"][0][0] == 2  # device 2's, not the 4 visible ones
    one_gpu = FakeCuda(monkeypatch, gpus=1)  # continued as one SLURM task: its GPU is cuda:0
    RandomStates(torch.device("cuda", 0)).load_state_dict(saved)
    assert one_gpu.set == [(0, 2)] and cuda.set == []


def test_a_checkpoint_of_every_visible_gpu_restores_the_own_devices_entry(monkeypatch, caplog):
    cuda = FakeCuda(monkeypatch, gpus=2)
    old = RandomStates("cpu").state_dict()  # the format saved before: every visible GPU's state
    old["per_rank"][0]["cuda"] = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 8, dtype=torch.uint8)]
    RandomStates(torch.device("cuda", 1)).load_state_dict(old)
    assert cuda.set == [(1, 8)]
    RandomStates(torch.device("cuda", 3)).load_state_dict(old)  # an index the checkpoint never had
    assert cuda.set == [(1, 8)] and "none of cuda:3: starts afresh" in caplog.text


def test_the_cpu_generators_resume_draw_for_draw():
    states = RandomStates("cpu")
    saved = states.state_dict()
    draws = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    states.load_state_dict(saved)
    again = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


def test_tensors_are_moved_to_the_cpu_before_they_are_gathered(monkeypatch):
    moved = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda tensor: moved.append(tensor.shape) or cpu(tensor))
    model = torch.nn.Linear(2, 3)
    model(torch.ones(1, 2)).sum().backward()
    (grads,) = AccumulatedGradients(model).state_dict()["per_rank"]
    assert [g.shape for g in grads] == [(3, 2), (3,)] and moved == [(3, 2), (3,)]
    assert distributed.per_rank({"a": [None, 1.5, "x"], "b": (torch.ones(2),)})[0]["a"] == [None, 1.5, "x"]


def test_the_metric_state_is_ignites_format_and_restores():
    device = "cpu"
    metric = Average(device=device)
    for value in (1.0, 2.0, 6.0):
        metric.update(torch.tensor(value))
    ours = MetricState(metric, device).state_dict()
    theirs = metric.state_dict()
    assert list(ours) == list(theirs)
    (key,) = ours
    assert ours[key][0].keys() == theirs[key][0].keys()
    for name, value in theirs[key][0].items():
        assert torch.equal(torch.as_tensor(ours[key][0][name]), torch.as_tensor(value)), name
    restored = Average(device=device)
    MetricState(restored, device).load_state_dict(ours)
    assert restored.compute() == pytest.approx(3.0)
