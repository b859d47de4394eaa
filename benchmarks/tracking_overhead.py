"""What TensorBoard's pictures cost a run, and a check that they change no number.

    python -m benchmarks.tracking_overhead [--epochs 3] [--repeats 3] [--out /tmp/tracking_overhead]

Trains the default recipe (effnet-b0 on the bundled digits) for ``--epochs`` with ``--no-pictures`` and with the
pictures (the default), alternating, ``--repeats`` times each, in fresh processes; prints each run's wall time
(``summary.json``), the medians and their ratio, and whether every run's ``history.csv`` equals the first one's
without its time columns (the pictures must not move the training's random draws).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd

from src.tracking.history import TIME_COLUMNS


def train(out: Path, name: str, epochs: int, pictures: bool) -> tuple[float, pd.DataFrame]:
    command = [sys.executable, "-m", "src.train", "--epochs", str(epochs), "--no-progress", "--no-notes"]
    command += ["--output-dir", str(out), "--run-name", name] + ([] if pictures else ["--no-pictures"])
    subprocess.run(command, check=True, capture_output=True)
    summary = json.loads((out / name / "summary.json").read_text())
    return summary["wall_time_s"], pd.read_csv(out / name / "history.csv").drop(columns=list(TIME_COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tracking_overhead"))
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    histories = []
    for repeat in range(args.repeats):
        for pictures in (False, True):
            name = f"{'pictures' if pictures else 'plain'}-{repeat}"
            wall, history = train(args.out, name, args.epochs, pictures)
            times[pictures].append(wall)
            histories.append(history)
            print(f"{name}: {wall:.1f} s", flush=True)
    plain, drawn = statistics.median(times[False]), statistics.median(times[True])
    same = all(h.equals(histories[0]) for h in histories)
    print(f"median wall time: --no-pictures {plain:.1f} s, pictures {drawn:.1f} s, ratio {drawn / plain:.3f}")
    print(f"history.csv without time columns identical in all {len(histories)} runs: {same}")


if __name__ == "__main__":
    main()
