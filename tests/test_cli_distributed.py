"""torchrun with two CPU processes (gloo, loopback): one run folder, predictions a single process reproduces from
the best checkpoint, resume, and a bad flag that stops both processes."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from src.predict import main as predict_main
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
# 172 train rows (86 per process, batches of 16 each) and 43 valid rows (blocks of 22 and 21).
FLAGS = ["--arch", "resnet18", "--device", "cpu", "--data-fraction", "0.043", "--batch-size", "32"]
FLAGS += ["--train-eval-size", "32", "--no-progress"]


def _torchrun(*args: str, program: tuple[str, ...] = ("-m", "src.train")) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # a script in tmp_path imports src too
    return subprocess.run([*launcher, *program, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


# src.train in which rank 1 fails at its third iteration, after both processes have started to step together.
FAILING_RANK = """
import os, sys
import src.training.trainer
from ignite.engine import Events
from src.train import main

attach = src.training.trainer.attach_stopping

def attach_and_fail(trainer, *args, **kwargs):
    def fail():
        raise RuntimeError("injected failure in rank 1")
    if os.environ["RANK"] == "1":
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), fail)
    attach(trainer, *args, **kwargs)

src.training.trainer.attach_stopping = attach_and_fail
sys.exit(main(sys.argv[1:]))
"""


def test_two_processes_train_one_run_that_one_process_reproduces_and_resume_it(tmp_path):
    result = _torchrun(*FLAGS, "--epochs", "1", "--output-dir", str(tmp_path), "--run-name", "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "ddp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["NOTES.md", "ddp"]
    assert result.stdout.count("best valid accuracy") == 1
    assert (tmp_path / "NOTES.md").read_text().count("\n## ") == 1  # one entry: rank 0's
    assert len(list(run.glob("events.out.tfevents*"))) == 1 and len(list(run.glob("checkpoint_*.pt"))) == 1

    # One process predicts the valid rows again with the best checkpoint: the same probabilities, in the same order.
    assert predict_main(["--run", str(run), "--oof", "--tta", "none"]) == 0
    saved = pd.read_csv(run / "valid_predictions.csv", dtype={"id": str, "label": str})
    again = pd.read_csv(run / "oof_tta-none.csv", dtype={"id": str, "label": str})
    columns = [c for c in saved.columns if c.startswith("p_")]
    assert len(saved) == 43 and saved["id"].tolist() == again["id"].tolist()
    assert np.allclose(saved[columns], again[columns], atol=1e-6)
    with (run / "history.csv").open() as f:
        first = list(csv.DictReader(f))[0]
    predicted = np.array([c[2:] for c in columns])[again[columns].to_numpy().argmax(axis=1)]
    assert float(first["valid_accuracy"]) == (predicted == again["label"]).mean()  # every valid row counted once

    result = _torchrun("--resume", str(run), "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    with (run / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[1]["iteration"]) == 2 * int(rows[0]["iteration"])


def test_a_bad_value_stops_the_processes_with_the_message_and_writes_nothing(tmp_path):
    result = _torchrun(*FLAGS, "--batch-size", "31", "--output-dir", str(tmp_path))
    assert result.returncode != 0
    assert "--batch-size 31: the batch over all 2 processes; expected a multiple of 2" in result.stderr
    assert not any(tmp_path.iterdir())


def test_a_failure_in_one_process_stops_both_with_its_error(tmp_path):
    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK)
    result = _torchrun(*FLAGS, "--epochs", "2", "--output-dir", str(tmp_path / "exp"), program=(str(script),))
    assert result.returncode != 0  # not a hang: the launcher stops the other process (timeout above: 300 s)
    assert "injected failure in rank 1" in result.stderr
