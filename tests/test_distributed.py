"""Two processes (gloo, loopback): the averaged gradient step equals one large batch, and distributed evaluation
counts every row once, so it equals the single-process evaluation for a set that does not divide evenly."""

import os
from datetime import timedelta

import ignite.distributed as idist
import numpy as np
import pytest
import torch
from torch import nn

from src.config import StepConfig
from src.metrics import ignite_metric
from src.targets import Head, Task
from src.training.engine import create_evaluator, create_trainer, make_metrics
from src.utils import distributed
from tests.helpers import CPU, TinyConvNet, free_port, make_blobs

TASK = Task("single", (Head("label", ("a", "b", "c")),))
PLAIN = StepConfig(channels_last=False)


def _fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyConvNet(num_classes=3)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    metrics = {**make_metrics(TASK), "map@3": ignite_metric("map@3", TASK)}
    evaluator = create_evaluator(model, metrics, CPU, PLAIN)
    evaluator.run([(x[i : i + 2], y[i : i + 2]) for i in range(0, len(x), 2)])  # batches of 2: a ragged last one
    return dict(evaluator.state.metrics)


def _in_each_process(local_rank: int, out: str) -> None:
    rank, processes = idist.get_rank(), idist.get_world_size()
    model = _fresh_model()
    x, y = make_blobs(16, 3, size=8)
    share = slice(rank * 16 // processes, (rank + 1) * 16 // processes)  # the global batch of 16, halved
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    create_trainer(distributed.wrap(model), optimizer, nn.CrossEntropyLoss(), CPU, PLAIN).run([(x[share], y[share])])

    x_valid, y_valid = make_blobs(7, 3, size=8, seed=1)  # 7 rows: blocks of 4 and 3
    rows = distributed.shard(np.arange(7))
    metrics = _evaluate(model, x_valid[rows], y_valid[rows])
    with torch.no_grad():
        logits = distributed.gather_rows(model.eval()(x_valid[rows]))
    if distributed.is_main():
        torch.save({"state": model.state_dict(), "metrics": metrics, "logits": logits, "rows": rows}, out)


def test_two_processes_step_like_one_batch_and_evaluate_every_row_once(tmp_path):
    out = tmp_path / "rank0.pt"
    loopback = dict(master_addr="127.0.0.1", master_port=free_port(), timeout=timedelta(seconds=60))  # no hang
    with idist.Parallel(backend="gloo", nproc_per_node=2, **loopback) as parallel:
        parallel.run(_in_each_process, str(out))
    result = torch.load(out, weights_only=False)

    model = _fresh_model()  # one process, the whole batch of 16
    x, y = make_blobs(16, 3, size=8)
    create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), nn.CrossEntropyLoss(), CPU, PLAIN).run([(x, y)])
    for name, value in model.state_dict().items():
        assert torch.allclose(result["state"][name], value, atol=1e-6), name
    assert not torch.allclose(_fresh_model().fc.weight, model.fc.weight)  # the step moved the weights

    x_valid, y_valid = make_blobs(7, 3, size=8, seed=1)
    assert result["rows"].tolist() == [0, 1, 2, 3]  # rank 0's block; rank 1 had 3 rows
    single = _evaluate(model, x_valid, y_valid)
    assert result["metrics"].keys() == single.keys()
    for name, value in single.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-6), name
    with torch.no_grad():
        assert torch.allclose(result["logits"], model.eval()(x_valid), atol=1e-6)  # every row once, in order


def test_device_cpu_hides_the_gpus_from_a_process_group(monkeypatch):
    # ignite's gloo group would otherwise pin each process to cuda:<local rank> and gather on the GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: os.environ["CUDA_VISIBLE_DEVICES"] != "")
    distributed.hide_cuda()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # CUDA counted its devices before: too late
    with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES= torchrun"):
        distributed.hide_cuda()


def test_launch_hides_the_gpus_only_for_cpu_process_groups(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    hidden = []
    monkeypatch.setattr(distributed, "hide_cuda", lambda: hidden.append(True))

    class Parallel:  # stands in for idist.Parallel: the command runs once, in this process
        def __init__(self, backend):
            self.backend = backend

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def run(self, fn, *args):
            fn(0, *args)

    monkeypatch.setattr(distributed.idist, "Parallel", Parallel)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ran = []
    distributed.launch(ran.append, "cpu", "a")
    distributed.launch(ran.append, "cuda", "b")
    assert ran == ["a", "b"] and hidden == [True]
