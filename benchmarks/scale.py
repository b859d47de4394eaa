"""Costs as the work grows: wall time and peak memory of inspect, training set-up, predict, OOF gathering, blending
and stacking at N = 1k, 10k, 100k images (and 1M rows for the table-level steps, which read no image).

    python -m benchmarks.scale --sizes 1000,10000,100000 [--out DIR] [--only inspect,setup,predict,oof,ensemble,stack]
        [--rows 1000000] [--repeats 1] [--code OLD_TREE,.] [--timeout 900]

Data (written once into ``--out`` and kept for reruns, else into a temporary folder):

- ``images-<N>/comp/``: a competition folder as `src.kaggle inspect` expects it: ``train.csv`` (id, label of 10
  classes), ``train/`` and ``test/`` with N 64-px colour JPEGs each (smooth random colour blobs, ~1.5 KB),
  ``sample_submission.csv`` (the test ids); ``images-<N>/tags.csv``: the same training images with 1-5 of 1,000
  tags each (iMet-like, long-tailed tag frequencies).
- ``tables-<N>x<C>/run{A,B}/``: fake ``--fold all`` run folders in `src.inference.oof`'s format: ``fold<k>/`` with
  ``valid_predictions.csv``, ``classes.json`` and ``config.yaml``, ``oof.csv`` and ``test_predictions.csv``; C =
  1,000 tags for every N of ``--sizes``, C = 10 classes (one label) for those N and ``--rows``.

Steps (``--only``), each run as its own child process, whose wall time and peak RSS (``os.wait4``'s ``ru_maxrss``
of that child) are recorded:

- ``inspect``: ``python -m src.kaggle inspect images-<N>/comp``.
- ``setup``: one-label and 1,000-tag training set-up to the first batch, timed per stage in the child (`load_data`:
  table, targets and image checks; `assign_folds`; `setup_loaders`; the first training batch), then the valid fold's
  predictions written by `src.training.trainer.save_valid_predictions` (a linear model on the pooled pixels stands in
  for the network; ``valid_predict`` is its pass over the valid images, ``valid_write`` the rest: the table and the
  CSV).
- ``predict``: ``python -m src.predict --tta flip`` on N test images with a resnet18 run trained for one iteration on
  the smallest N (one label and 1,000 tags); test images/s.
- ``oof``: `src.training.cv.gather_oof` of the five folds' ``valid_predictions.csv`` of runA.
- ``ensemble``: ``python -m src.ensemble runA runB`` (``--weights auto``, the default).
- ``stack``: ``python -m src.ensemble runA runB --method stack`` (a logistic stacker; one problem per tag); on the
  1,000-tag tables only up to ``--stack-wide-max`` rows (1,000: 9-15 minutes there; linear in N beyond).

``--code OLD,NEW`` runs every step in each of the source trees in turn (old, new, old, new ... for ``--repeats``),
so before/after times are measured side by side; the table gives medians and the ratio NEW/OLD. A copy of the old
tree: ``git archive HEAD | tar -x -C /tmp/scale_old``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS = ("inspect", "setup", "predict", "oof", "ensemble", "stack")
LABELS = 10  # classes of the one-label data
TAGS = 1000  # tags of the multi-label data
WIDE, NARROW = TAGS, LABELS
FOLDS = 5
IMAGE_SIDE = 64


# ----------------------------------------------------------------------------------------------------------------
# data


def write_images(folder: Path, ids: list[str], seed: int) -> None:
    """64-px colour JPEGs of smooth random colour blobs (a 6x6 random colour grid, bicubically enlarged)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for image_id in ids:
        grid = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        image = cv2.resize(grid, (IMAGE_SIDE, IMAGE_SIDE), interpolation=cv2.INTER_CUBIC)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (folder / f"{image_id}.jpg").write_bytes(data.tobytes())


def tag_lists(n: int, rng: np.random.Generator) -> list[str]:
    """1-5 distinct tags per row out of `TAGS`, drawn with Zipf-like frequencies (a few common, many rare)."""
    weights = 1.0 / np.arange(1, TAGS + 1) ** 0.8
    weights /= weights.sum()
    counts = rng.integers(1, 6, n)
    draws = rng.choice(TAGS, size=(n, 8), p=weights)
    rows = []
    for count, draw in zip(counts, draws):
        chosen = list(dict.fromkeys(draw.tolist()))[:count]
        rows.append(" ".join(f"t{t:03d}" for t in sorted(chosen)))
    return rows


def image_data(root: Path, n: int) -> Path:
    """``images-<n>/`` (see the module doc), written unless already complete."""
    import pandas as pd

    folder = root / f"images-{n}"
    done = folder / "done"
    if done.is_file():
        return folder
    comp = folder / "comp"
    comp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    train_ids = [f"tr{i:07d}" for i in range(n)]
    test_ids = [f"te{i:07d}" for i in range(n)]
    labels = [f"c{c}" for c in rng.integers(0, LABELS, n)]
    pd.DataFrame({"id": train_ids, "label": labels}).to_csv(comp / "train.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": "c0"}).to_csv(comp / "sample_submission.csv", index=False)
    pd.DataFrame({"id": train_ids, "tags": tag_lists(n, rng)}).to_csv(folder / "tags.csv", index=False)
    write_images(comp / "train", train_ids, seed=2 * n)
    write_images(comp / "test", test_ids, seed=2 * n + 1)
    done.write_text("")
    return folder


def table_data(root: Path, n: int, classes: int) -> Path:
    """``tables-<n>x<classes>/`` with runA and runB (see the module doc), written unless already complete."""
    import pandas as pd

    from src.config import Config, save_config
    from src.inference.oof import predictions_frame, write_predictions
    from src.targets import Head, Task

    folder = root / f"tables-{n}x{classes}"
    if (folder / "done").is_file():
        return folder
    rng = np.random.default_rng(n + classes)
    ids = [f"tr{i:07d}" for i in range(n)]
    folds = rng.integers(0, FOLDS, n)
    if classes == WIDE:
        task = Task("multilabel", (Head("tags", tuple(f"t{t:03d}" for t in range(TAGS))),))
        labels = pd.DataFrame({"tags": tag_lists(n, rng)})
        config = Config.of(multilabel=True, label_col=["tags"], arch="resnet18")
    else:
        task = Task("single", (Head("label", tuple(f"c{c}" for c in range(LABELS))),))
        labels = pd.DataFrame({"label": [f"c{c}" for c in rng.integers(0, LABELS, n)]})
        config = Config.of(arch="resnet18")
    order = np.argsort(folds, kind="stable")  # oof.csv: fold 0's rows, then fold 1's, ...
    for run in ("runA", "runB"):
        run_dir = folder / run
        oof_probs, test_probs = fake_probabilities(rng, n, task, labels), fake_probabilities(rng, n, task, None)
        for k in range(FOLDS):
            fold_dir = run_dir / f"fold{k}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            (fold_dir / "classes.json").write_text(json.dumps(task.to_dict()))
            save_config(config.replace(fold=k), fold_dir / "config.yaml")
            rows = np.flatnonzero(folds == k)
            frame = predictions_frame([ids[i] for i in rows], oof_probs[rows], task, folds[rows], labels.iloc[rows])
            write_predictions(frame, fold_dir / "valid_predictions.csv")
        frame = predictions_frame([ids[i] for i in order], oof_probs[order], task, folds[order], labels.iloc[order])
        write_predictions(frame, run_dir / "oof.csv")
        test_ids = [f"te{i:07d}" for i in range(n)]
        write_predictions(predictions_frame(test_ids, test_probs, task), run_dir / "test_predictions.csv")
    (folder / "done").write_text("")
    return folder


def fake_probabilities(rng: np.random.Generator, n: int, task, labels) -> np.ndarray:
    """float64 (n, classes) probabilities as a model gives them: softmax (one label) or sigmoid (tags) of random
    logits, raised on the true classes when ``labels`` is given (so the metrics see a signal)."""
    classes = len(task.classes)
    logits = rng.normal(-6.0 if task.kind == "multilabel" else 0.0, 2.5, (n, classes))
    if labels is not None:
        targets = task.encode(labels.reset_index(drop=True))
        if task.kind == "multilabel":
            logits += 8.0 * targets
        else:
            logits[np.arange(n), targets] += 3.0
    if task.kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-logits))
    logits -= logits.max(1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


# ----------------------------------------------------------------------------------------------------------------
# children: the in-process steps, run as `python benchmarks/scale.py child-... ` in the tree under test


def child_setup(csv: str, image_dir: str, multilabel: bool, out: str) -> dict:
    """The training set-up of `src.train.run` to the first batch, then the valid predictions; seconds per stage."""
    import types

    import torch

    import src.training.trainer
    from src.config import Config
    from src.data.folds import assign_folds
    from src.loaddata import load_data
    from src.training.assembly import prepare, reading, setup_loaders

    times: dict[str, float] = {}
    start = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal start
        times[name] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()

    label = {"label_col": ["tags"], "multilabel": True} if multilabel else {}
    config = Config.of(
        train_csv=csv, image_dir=image_dir, image_template="{id}.jpg", arch="resnet18", batch_size=64,
        train_eval_size=64, epochs=1, max_iters_per_epoch=1, progress=False, device="cpu", **label,
    )
    config = prepare(config)
    device = torch.device("cpu")
    lap("imports")
    data = load_data(config.data, reading(config), progress=False)
    lap("load_data")
    fold_of = assign_folds(data, config.split.folds, config.split_seed, config.data.group_col, config.data.fold_col)
    lap("folds")
    loaders = setup_loaders(config, data, fold_of, device)
    lap("loaders")
    next(iter(loaders.train))
    lap("first_batch")

    class PooledLinear(torch.nn.Module):  # stands in for the network: the valid pass reads and decodes every image
        def __init__(self, in_chans: int, outputs: int):
            super().__init__()
            self.fc = torch.nn.Linear(in_chans, outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean((2, 3)))  # (N, C, H, W) -> (N, outputs)

    torch.manual_seed(0)  # the same stand-in in every tree: their valid predictions can be compared
    model = PooledLinear(data.in_chans, data.task.num_outputs)
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savetxt(run_dir / "folds.txt", fold_of, fmt="%d")  # every row's fold, to compare across trees
    torch.save(model.state_dict(), run_dir / "best.pt")
    training = types.SimpleNamespace(
        best_checkpoint=types.SimpleNamespace(last_checkpoint=str(run_dir / "best.pt")), model=model, device=device
    )
    predict_seconds = []
    predict_logits = src.training.trainer.predict_logits

    def timed_predict(*args, **kwargs):
        began = time.perf_counter()
        logits = predict_logits(*args, **kwargs)
        predict_seconds.append(time.perf_counter() - began)
        return logits

    src.training.trainer.predict_logits = timed_predict  # instrumentation only: the same function, timed
    src.training.trainer.save_valid_predictions(run_dir, training, loaders, data, fold_of, config)
    lap("valid_predictions")
    times["valid_predict"] = round(predict_seconds[0], 3)
    times["valid_write"] = round(times["valid_predictions"] - predict_seconds[0], 3)
    return times


def child_oof(run_dir: str, multilabel: bool) -> dict:
    """`src.training.cv.gather_oof` of a fake run's five folds."""
    from src.config import Config
    from src.training.cv import gather_oof

    config = Config.of(folds=FOLDS, multilabel=multilabel, progress=False)
    began = time.perf_counter()
    gather_oof(config, Path(run_dir))
    return {"gather_oof": round(time.perf_counter() - began, 3)}


# ----------------------------------------------------------------------------------------------------------------
# the parent: one child per step and tree


def measure(command: list[str], cwd: Path, timeout: float) -> dict:
    """Runs ``command`` in ``cwd`` (its ``src`` first on the path) under GNU time; wall seconds, peak RSS of the
    command (MB; GNU time, a small process, forks it, so none of this process's memory is counted), the child's own
    stage times (its last stdout line when it is JSON) or the end of its output when it failed."""
    env = dict(os.environ, PYTHONPATH=str(cwd), PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory() as tmp:
        rss, log = Path(tmp) / "rss", Path(tmp) / "log"
        began = time.perf_counter()
        with open(log, "wb") as output:
            process = subprocess.Popen(
                ["/usr/bin/time", "-f", "%M", "-o", str(rss), *command],
                cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        wall = time.perf_counter() - began
        text = log.read_text(errors="replace")
        peak = rss.read_text().split()[-1] if rss.is_file() and rss.read_text().split() else "0"
    result = {"wall_s": round(wall, 2), "peak_mb": round(int(peak) / 1024) if peak.isdigit() else 0}
    result["rc"] = process.returncode
    if wall > timeout:
        result["timed_out"] = True
    lines = [line for line in text.strip().splitlines() if not line.startswith("Command exited with")]
    if process.returncode == 0 and lines and lines[-1].startswith("{"):
        result["stages"] = json.loads(lines[-1])
    elif process.returncode != 0:
        result["error"] = "\n".join(lines[-5:])
    return result


def step_commands(step: str, n: int, root: Path, scratch: Path, classes: int) -> list[tuple[str, list[str]]]:
    """The (case name, command) pairs of one step at size n."""
    py, me = sys.executable, str(Path(__file__).resolve())
    images, tables = root / f"images-{n}", root / f"tables-{n}x{classes}"
    if step == "inspect":
        return [("inspect", [py, "-m", "src.kaggle", "inspect", str(images / "comp")])]
    if step == "setup":
        comp = images / "comp"
        single = ["--csv", str(comp / "train.csv"), "--image-dir", str(comp / "train")]
        tags = ["--csv", str(images / "tags.csv"), "--image-dir", str(comp / "train"), "--multilabel"]
        return [
            ("setup single", [py, me, "child-setup", *single, "--out", str(scratch / "setup")]),
            (f"setup {TAGS} tags", [py, me, "child-setup", *tags, "--out", str(scratch / "setup")]),
        ]
    if step == "predict":
        cases = []
        for name, run in (("single", "predict-single"), (f"{TAGS} tags", "predict-tags")):
            cases.append((f"predict {name} flip", [
                py, "-m", "src.predict", "--run", str(root / "runs" / run), "--tta", "flip",
                "--test-csv", str(images / "comp" / "sample_submission.csv"),
                "--image-dir", str(images / "comp" / "test"), "--output-dir", str(scratch / "predict"),
                "--submission-format", "label" if name == "single" else "tags", "--device", "cpu",
            ]))
        return cases
    runs = [str(tables / "runA"), str(tables / "runB")]
    out = ["--output-dir", str(scratch / "ensemble")]
    if step == "oof":
        label = ["--multilabel"] if classes == WIDE else []
        return [(f"oof x{classes}", [py, me, "child-oof", "--run", runs[0], *label])]
    if step == "ensemble":
        return [(f"ensemble x{classes}", [py, "-m", "src.ensemble", *runs, *out])]
    return [(f"stack x{classes}", [py, "-m", "src.ensemble", *runs, "--method", "stack", *out])]


def train_predict_runs(root: Path, n: int, cwd: Path) -> None:
    """One-iteration resnet18 runs on ``images-<n>`` (one label, tags) for the predict step, unless already there."""
    comp, tags = root / f"images-{n}" / "comp", root / f"images-{n}" / "tags.csv"
    for run, extra in (
        ("predict-single", ["--train-csv", str(comp / "train.csv")]),
        ("predict-tags", ["--train-csv", str(tags), "--multilabel", "--label-col", "tags"]),
    ):
        if (root / "runs" / run / "summary.json").is_file():
            continue
        command = [
            sys.executable, "-m", "src.train", *extra, "--image-dir", str(comp / "train"), "--image-template",
            "{id}.jpg", "--arch", "resnet18", "--epochs", "1", "--max-iters-per-epoch", "1", "--train-eval-size",
            "64", "--output-dir", str(root / "runs"), "--run-name", run, "--no-progress", "--device", "cpu",
        ]
        subprocess.run(command, cwd=cwd, check=True, env=dict(os.environ, PYTHONPATH=str(cwd)))


def run_benchmark(args: argparse.Namespace) -> list[dict]:
    root = Path(args.out or tempfile.mkdtemp(prefix="scale-"))
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="scale-scratch-"))
    trees = [Path(t).resolve() for t in args.code.split(",")]
    steps = args.only.split(",") if args.only else list(STEPS)
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise SystemExit(f"--only: unknown step(s) {sorted(unknown)}; known: {', '.join(STEPS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [int(s) for s in args.rows.split(",")] if args.rows else []
    image_steps = [s for s in steps if s in ("inspect", "setup", "predict")]
    table_steps = [s for s in steps if s in ("oof", "ensemble", "stack")]
    plan: list[tuple[str, int, int]] = []  # (step, n, classes)
    for n in sizes:
        if image_steps:
            began = time.perf_counter()
            image_data(root, n)
            print(f"data: images-{n} ready ({time.perf_counter() - began:.0f} s)", flush=True)
        plan += [(step, n, 0) for step in image_steps]
    if "predict" in steps:
        train_predict_runs(root, min(sizes), trees[-1])
    for classes, counts in ((WIDE, sizes), (NARROW, sizes + rows)):
        for n in counts:
            if table_steps:
                began = time.perf_counter()
                table_data(root, n, classes)
                print(f"data: tables-{n}x{classes} ready ({time.perf_counter() - began:.0f} s)", flush=True)
            too_wide = classes == WIDE and n > args.stack_wide_max  # ~0.1 s per logistic fit, 6 fits per tag
            plan += [(step, n, classes) for step in table_steps if not (step == "stack" and too_wide)]
    results = []
    for step, n, classes in plan:
        for case, command in step_commands(step, n, root, scratch, classes):
            for repeat in range(args.repeats):
                for tree in trees:
                    result = measure(command, tree, args.timeout)
                    result.update(case=case, n=n, tree=str(tree), repeat=repeat)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    (root / "scale.json").write_text(json.dumps(results, indent=1))
    print_table(results, trees)
    return results


def print_table(results: list[dict], trees: list[Path]) -> None:
    """Markdown: per case and N, median wall seconds and peak MB per tree (and NEW/OLD ratios for two trees)."""
    keys = list(dict.fromkeys((r["case"], r["n"]) for r in results))
    names = [t.name or str(t) for t in trees]
    head = "| case | N | " + " | ".join(f"{name} s | {name} MB" for name in names)
    head += " | time new/old | memory new/old |" if len(trees) == 2 else " |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for case, n in keys:
        cells, medians = [], []
        for tree in trees:
            runs = [r for r in results if (r["case"], r["n"], r["tree"]) == (case, n, str(tree))]
            ok = [r for r in runs if r["rc"] == 0]
            if not ok:
                cells += ["timeout" if any(r.get("timed_out") for r in runs) else "failed", "-"]
                medians.append(None)
                continue
            wall, peak = statistics.median(r["wall_s"] for r in ok), statistics.median(r["peak_mb"] for r in ok)
            cells += [f"{wall:.2f}", f"{peak:.0f}"]
            medians.append((wall, peak))
        row = f"| {case} | {n} | " + " | ".join(cells) + " |"
        if len(trees) == 2:
            both = all(medians)
            row += f" {medians[1][0] / medians[0][0]:.2f} |" if both else " - |"
            row += f" {medians[1][1] / medians[0][1]:.2f} |" if both else " - |"
        print(row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="child")
    setup = sub.add_parser("child-setup")
    setup.add_argument("--csv", required=True)
    setup.add_argument("--image-dir", required=True)
    setup.add_argument("--multilabel", action="store_true")
    setup.add_argument("--out", required=True)
    oof = sub.add_parser("child-oof")
    oof.add_argument("--run", required=True)
    oof.add_argument("--multilabel", action="store_true")
    parser.add_argument("--sizes", default="1000,10000,100000", help="image counts N, comma-separated")
    parser.add_argument("--rows", default="1000000", help="extra row counts of the table steps (one label only)")
    parser.add_argument("--out", help="data folder, kept for reruns (default: a temporary folder)")
    parser.add_argument("--only", help=f"comma-separated steps of {','.join(STEPS)}")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each case per tree")
    parser.add_argument("--code", default=".", help="source trees to measure, comma-separated (OLD,NEW)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a step is killed")
    parser.add_argument("--stack-wide-max", type=int, default=1000, help="stack the 1,000-tag tables up to this N")
    args = parser.parse_args(argv)
    if args.child == "child-setup":
        print(json.dumps(child_setup(args.csv, args.image_dir, args.multilabel, args.out)))
    elif args.child == "child-oof":
        print(json.dumps(child_oof(args.run, args.multilabel)))
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
