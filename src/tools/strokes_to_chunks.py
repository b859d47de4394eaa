"""Preprocess QuickDraw CSVs (one per class, millions of rows) once into K balanced, shuffled chunk CSVs.

    python -m src.tools.strokes_to_chunks --input "train_simplified/*.csv" --out chunks --chunks 100

Row j of each class goes to chunk (j + class offset) mod K, so every chunk holds each class in the same
proportion (within one row) as the whole set: the first few chunks are a balanced sample, and training
can read ``--train-csv "chunks/train_k[0-9].csv"`` (10 of 100 chunks = 10% of every class) without
touching the rest. Each class file is read in pieces of ``--read-rows`` rows, so memory holds one piece
plus, at the end, one chunk at a time (the seed GRU baseline's trick for the 50M-drawing competition).
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

COLUMNS = ["countrycode", "drawing", "key_id", "recognized", "word"]


def write_chunks(pattern: str, out: Path, chunks: int, seed: int = 0, read_rows: int = 100_000) -> list[Path]:
    """Splits the class CSVs matched by ``pattern`` into ``chunks`` balanced files ``out/train_k<i>.csv``.

    Args:
        pattern: glob of the QuickDraw CSVs (columns include ``drawing`` and ``word``).
        out: output folder (created; existing chunk files are replaced).
        chunks: number of chunk files K.
        seed: seed of the per-class offsets and of the shuffle inside each chunk.
        read_rows: rows read per piece of a class file.

    Returns:
        The chunk paths, in chunk order.

    Raises:
        FileNotFoundError: nothing matches ``pattern``.
        ValueError: a file lacks the ``drawing`` or ``word`` column (names the file).
    """
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"--input {pattern}: no such file")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"train_k{i}.csv" for i in range(chunks)]
    for path in paths:
        path.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    for file in tqdm(files, desc="class files", unit="file", disable=None):  # no bar when not on a terminal
        offset, row = int(rng.integers(chunks)), 0
        for piece in pd.read_csv(file, chunksize=read_rows, dtype=str):
            missing = {"drawing", "word"} - set(piece.columns)
            if missing:
                raise ValueError(f"{file}: column(s) {sorted(missing)} not found; expected QuickDraw columns {COLUMNS}")
            piece = piece[[c for c in COLUMNS if c in piece.columns]]
            target = (np.arange(row, row + len(piece)) + offset) % chunks
            for k in np.unique(target):
                part = piece[target == k]
                part.to_csv(paths[k], mode="a", header=not paths[k].exists(), index=False)
            row += len(piece)
    for k, path in enumerate(tqdm(paths, desc="shuffling chunks", unit="chunk", disable=None)):  # mix the classes
        if path.exists():
            table = pd.read_csv(path, dtype=str)
            table.sample(frac=1.0, random_state=seed + k).to_csv(path.with_suffix(".tmp"), index=False)
            os.replace(path.with_suffix(".tmp"), path)
    return [p for p in paths if p.exists()]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m src.tools.strokes_to_chunks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, metavar="GLOB", help="glob of the class CSVs (quoted for the shell)")
    parser.add_argument("--out", type=Path, required=True, metavar="FOLDER", help="where train_k<i>.csv go")
    parser.add_argument("--chunks", type=int, default=100, metavar="K", help="chunk files (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="INT",
        help="seed of the classes' offsets and of the shuffle inside each chunk (default: %(default)s)",
    )
    parser.add_argument(
        "--read-rows", type=int, default=100_000, metavar="ROWS",
        help="rows of a class file read at a time, which bounds the memory (default: %(default)s)",
    )
    args = parser.parse_args()
    paths = write_chunks(args.input, args.out, args.chunks, args.seed, args.read_rows)
    print(f"wrote {len(paths)} chunks to {args.out}")


if __name__ == "__main__":
    main()
