"""SWA (--swa-start-epoch): the average of the epoch-end weights, BatchNorm statistics recomputed, resumable."""

import csv

import torch
from ignite.engine import Engine, Events
from torch import nn

from src.engine import create_evaluator, make_metrics
from src.handlers import attach_swa, build_swa
from src.train import main
from tests.test_cli import TINY


def test_swa_averages_epoch_end_weights_and_recomputes_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(12, 1, 4, 4) * 3 + 5
    batches = [(x[:6], torch.zeros(6, dtype=torch.long)), (x[6:], torch.zeros(6, dtype=torch.long))]
    model(x)  # materialise the lazy layer
    swa = build_swa(model)

    snapshots = []

    def step(engine, batch):  # a fake "training step": move every weight by a known amount
        with torch.no_grad():
            for p in model.parameters():
                p.add_(engine.state.iteration * 0.1)

    trainer = Engine(step)
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda: snapshots.append([p.detach().clone() for p in model.parameters()])
    )
    evaluator = create_evaluator(swa, make_metrics(), torch.device("cpu"))
    attach_swa(trainer, swa, model, 2, batches, evaluator, batches, torch.device("cpu"))
    trainer.run(batches, max_epochs=3)

    averaged = [(a + b) / 2 for a, b in zip(snapshots[1], snapshots[2])]  # epochs 2 and 3 (start_epoch=2)
    assert all(torch.allclose(p, q) for p, q in zip(swa.module.parameters(), averaged))
    assert swa.n_averaged.item() == 2
    conv_out = swa.module[0](x).transpose(0, 1).reshape(2, -1)  # BN input of the averaged conv, per channel
    assert torch.allclose(swa.module[1].running_mean, conv_out.mean(1), atol=1e-4)  # update_bn: exact mean
    assert "accuracy" in evaluator.state.metrics


def test_cli_swa_validates_saves_and_resumes(tmp_path):
    flags = ["--swa-start-epoch", "2", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "swa", *TINY]
    assert main([*flags, "--epochs", "2"]) == 0
    assert main(["--resume", str(tmp_path / "swa"), "--epochs", "3"]) == 0
    run_dir = tmp_path / "swa"
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["valid_swa_accuracy"] != "" for r in rows] == [False, True, True]
    state = torch.load(run_dir / "checkpoint_3.pt", weights_only=False)
    assert state["swa_model"]["n_averaged"].item() == 2  # epochs 2 and 3, counted across the resume
    assert [p.name for p in run_dir.glob("swa_model_*.pt")] == ["swa_model_3.pt"]
