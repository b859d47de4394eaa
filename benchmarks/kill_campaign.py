"""Kill campaign: a small run SIGKILLed at random moments, each time continued by running the same command again.

    python -m benchmarks.kill_campaign [--kills 20] [--seed 0] [--out /tmp/kill_campaign]

1. Trains the run once without interruption (the reference history).
2. Starts the same command ``--kills`` times, each time SIGKILLing it after a random delay (during start-up, steps,
   validations or checkpoint writes alike); after each kill it checks the run folder: every checkpoint and
   ``history.csv`` must be readable, and it notes the iterations lost (reached before the kill, from the progress
   bar, minus the iteration of the newest checkpoint).
3. Runs the command to its end and compares ``history.csv`` (without its time columns) with the reference.
4. The cost of saving: the same run (2 epochs) with a training-state save after every optimizer step against
   saves at epoch ends only, alternating, in this session.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from src.tracking.history import TIME_COLUMNS
from src.tracking.rundir import checkpoints

RUN = [
    "--arch",
    "effnet-b0",
    "--epochs",
    "8",
    "--data-fraction",
    "0.5",
    "--batch-size",
    "32",
    "--train-eval-size",
    "64",
    "--mixup-alpha",
    "0.4",
    "--accumulation-steps",
    "2",
]
PROGRESS = re.compile(r"Epoch \[(\d+)/\d+\]: \[(\d+)/(\d+)\]")


def command(out: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "src.train", *RUN, "--output-dir", str(out), "--run-name", name, *extra]


def reached(log: str) -> int:
    """The last iteration the progress bar showed (ignite's bar shows the engine's iteration within the epoch,
    also after a resume), or 0; the bar refreshes every 0.1 s, so it can lag a little."""
    found = PROGRESS.findall(log)
    if not found:
        return 0
    epoch, step, length = (int(v) for v in found[-1])
    return (epoch - 1) * length + step


def state_of(run_dir: Path) -> tuple[int | None, int]:
    """(the newest readable checkpoint's iteration or None, the number of unreadable files among the checkpoints
    and history.csv)."""
    broken, newest = 0, None
    paths = checkpoints(run_dir) if any(run_dir.glob("checkpoint_*.pt")) else []
    for path in paths:
        try:
            iteration = torch.load(path, map_location="cpu", weights_only=True)["trainer"]["iteration"]
            newest = iteration if newest is None else max(newest, iteration)
        except Exception:
            broken += 1
    if (run_dir / "history.csv").is_file():
        try:
            pd.read_csv(run_dir / "history.csv")
        except Exception:
            broken += 1
    return newest, broken


def campaign(out: Path, kills: int, rng: random.Random, every: str) -> dict:
    run_dir, lost, broken_total, resumed = out / "killed", [], 0, 0
    log_path = out / "killed.log"
    for kill in range(kills):
        with log_path.open("w") as log:
            process = subprocess.Popen(command(out, "killed", "--checkpoint-every", every), stderr=log, stdout=log)
            time.sleep(rng.uniform(4.0, 14.0))
            process.send_signal(signal.SIGKILL)
            process.wait()
        text = log_path.read_text()
        resumed += "resumed from" in text
        newest, broken = state_of(run_dir)
        broken_total += broken
        at = reached(text)
        lost.append(max(at - (newest or 0), 0))
        print(f"kill {kill + 1}: reached iteration {at}, newest checkpoint {newest}, unreadable files {broken}")
        if (run_dir / "summary.json").is_file():
            print("the run finished before this kill")
    final = subprocess.run(command(out, "killed", "--checkpoint-every", every), capture_output=True, text=True)
    return {"lost": lost, "broken": broken_total, "resumed": resumed, "final_rc": final.returncode}


def save_cost(out: Path, repeats: int) -> tuple[float, float, int]:
    """Median wall times (s) of the run saving after every optimizer step and at epoch ends only, and the number
    of extra saves."""
    times: dict[str, list[float]] = {"1": [], "epoch": []}
    for repeat in range(repeats):
        for every in times:
            name = f"cost-{every}-{repeat}"
            start = time.perf_counter()
            flags = ["--checkpoint-every", every, "--no-progress", "--epochs", "2"]
            subprocess.run(command(out, name, *flags), capture_output=True)
            times[every].append(time.perf_counter() - start)
    history = pd.read_csv(out / "cost-1-0" / "history.csv")
    steps = int(history["iteration"].iloc[-1]) // 2  # accumulation 2
    return statistics.median(times["1"]), statistics.median(times["epoch"]), steps - len(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", default="5", help="--checkpoint-every of the killed run (optimizer steps)")
    parser.add_argument("--cost-repeats", type=int, default=3)
    parser.add_argument("--out", default="/tmp/kill_campaign")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    reference = subprocess.run(command(out, "reference", "--no-progress"), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]
    result = campaign(out, args.kills, random.Random(args.seed), args.every)
    same = (
        pd.read_csv(out / "killed" / "history.csv")
        .drop(columns=list(TIME_COLUMNS))
        .equals(pd.read_csv(out / "reference" / "history.csv").drop(columns=list(TIME_COLUMNS)))
    )
    lost = result["lost"]
    print(
        f"{args.kills} kills: {result['resumed']} restarts resumed from a checkpoint, {result['broken']} unreadable "
        f"files found, iterations lost per kill: max {max(lost)}, median {statistics.median(lost)} "
        f"(checkpoint every {args.every} optimizer steps = {2 * int(args.every)} iterations); final run exit code "
        f"{result['final_rc']}; final history.csv equal to the uninterrupted run's: {same}"
    )
    every_step, epochs_only, extra = save_cost(out, args.cost_repeats)
    print(
        f"cost: {every_step:.1f} s saving after every optimizer step vs {epochs_only:.1f} s at epoch ends only "
        f"(medians of {args.cost_repeats}): {(every_step - epochs_only) / extra:.3f} s per extra save ({extra} saves)"
    )


if __name__ == "__main__":
    main()
