"""Checkpoint averaging and model soups: ``python -m src.soup <run> [<run> ...] [--k 3] [--method uniform|greedy]``.

Averages the weights of each fold's best checkpoints (Wortsman et al. 2022, "Model soups: averaging weights of
multiple fine-tuned models improves accuracy without increasing inference time"; AutoGluon averages its top
checkpoints with a greedy soup by default):

- ``uniform``: the mean of the ``k`` best checkpoints of each run (by their valid score in the file name);
- ``greedy``: the candidates in order of their own valid score, each added only if the soup's valid score (the
  run's ``--metric``) does not drop, so the soup never scores below its best ingredient on that metric.

After averaging two or more checkpoints the BatchNorm running statistics are recomputed on the train fold's
train-eval subset (torch's ``update_bn``). The runs must share the arch and the folds (the same run retrained, or
runs fine-tuned from the same weights: averaging unrelated random initialisations does not work). The result is a
run folder (default ``<first run>-soup``) with ``best_model_soup_<key>=<score>.pt`` and ``valid_predictions.csv``
per fold (``oof.csv`` and ``cv_summary.json`` for ``--fold all``) and ``soup.json``: `src.predict` and
`src.ensemble` use it like any run. Keep more than 2 best checkpoints when training (``--n-saved 5``) to soup them.

The averaging is torch's ``state_dict`` arithmetic; the greedy selection is our own (no library offers it for
plain PyTorch checkpoints).

Check, then write: the runs, their checkpoints (each must open) and the output folder are checked before any
model is built; the soup is built in a temporary folder that becomes the output folder only when every fold is
done (`src.inference.outputs.replacing_folder`): a refused or failed command leaves an earlier soup as it was and makes
no folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro
from torch.optim.swa_utils import update_bn

from src.cli import parse_args, run_cli
from src.config import Config
from src.inference.oof import predictions_frame
from src.inference.outputs import check_folder, read_weights, replacing_folder
from src.metrics import score, to_probs
from src.tracking import rundir, share
from src.training.assembly import assemble, resolve_device
from src.training.cv import gather_oof
from src.training.engine import predict_logits, to_device
from src.training.evaluation import Selection
from src.utils import files

logger = logging.getLogger("src.soup")  # not __name__: "__main__" under python -m


@dataclasses.dataclass
class SoupConfig:
    """Average the best checkpoints of one or more runs (per fold) into a new run folder."""

    runs: Annotated[
        list[str], tyro.conf.Positional, tyro.conf.arg(metavar="RUN [RUN ...]", help_behavior_hint="(one or more)")
    ]
    """Run folders of one arch and the same folds (one fold's run, or --fold all runs)."""
    k: int = 3
    """Best checkpoints taken from each run (per fold)."""
    method: Literal["uniform", "greedy"] = "uniform"
    """uniform: the mean of them all; greedy: add each (best first) only if the valid score does not drop."""
    output: str | None = None
    """The soup's run folder; None: <first run>-soup (required when a run is mlflow:<run-id>)."""
    mlflow: str | None = None
    """Tracking URI of runs given as mlflow:<run-id> (shared with src.runs push --with-checkpoints); None:
    MLFLOW_TRACKING_URI."""
    device: str = "auto"
    """'auto', 'cpu', 'cuda' or 'cuda:N'."""

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("give one or more run folders to soup: python -m src.soup <run> [<run> ...]")
        if self.k < 1:
            raise ValueError(f"--k {self.k}: expected an integer >= 1")


def checkpoint_score(path: Path) -> float:
    """The score in a best checkpoint's name (``best_model_7_valid_accuracy=0.9812.pt`` -> 0.9812; ignite writes
    lower-is-better scores negated, so higher is better)."""
    return float(re.sub(r"\.pt$", "", path.name).rsplit("=", 1)[-1])


def candidates(fold_runs: Sequence[Path], k: int) -> list[Path]:
    """The ``k`` best checkpoints of each fold run, best first over all of them.

    Raises:
        FileNotFoundError: a run without best checkpoints.
    """
    chosen = []
    for run in fold_runs:
        best = sorted(Path(run).glob(rundir.BEST_MODELS), key=checkpoint_score, reverse=True)[:k]
        if not best:
            raise FileNotFoundError(f"{run}: no best_model_*.pt checkpoint to average")
        chosen += best
    return sorted(chosen, key=checkpoint_score, reverse=True)


def average(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors; other tensors (BatchNorm's ``num_batches_tracked``) from
    the first state.

    Raises:
        ValueError: the states do not hold the same tensors (another arch or class count).
    """
    first = states[0]
    for state in states[1:]:
        shapes = [k for k in first if torch.is_tensor(first[k])]  # the rest: extra state (the metadata encoding)
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in shapes):
            raise ValueError("the checkpoints hold different tensors: soups need one arch and one class list")
    return {
        name: torch.stack([s[name].float() for s in states]).mean(0).to(t.dtype)
        if torch.is_tensor(t) and t.is_floating_point()
        else t
        for name, t in first.items()
    }


class FoldSoup:
    """One fold's model, data and valid evaluation (``config``: the fold run's saved config)."""

    def __init__(self, config: Config, device: torch.device):
        parts = assemble(config.replace(progress=False, num_workers=0), device)
        self.config, self.device = parts.config, device
        self.data, self.fold_of, self.loaders, self.model = parts.data, parts.fold_of, parts.loaders, parts.model
        self.selection = Selection.of(config)

    def load(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        """The average of ``states`` in the model, with BatchNorm statistics recomputed when there are several."""
        self.model.load_state_dict(average(states) if len(states) > 1 else states[0])
        if len(states) > 1:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                # inputs moved here as 1-tuples: update_bn would keep only the images of (images, metadata)
                update_bn(((to_device(b, self.device)[0],) for b in self.loaders.bn), self.model)

    def evaluate(self) -> tuple[float, np.ndarray]:
        """The selecting metric on the valid fold, signed so that higher is better, and the probabilities."""
        logits = predict_logits(self.model, self.loaders.valid, self.device, self.config.step)
        probs = to_probs(logits, self.data.task)
        targets = self.data.targets[self.loaders.valid_rows]
        value = score(self.config.eval.metric, probs, targets, self.data.task, self.config.eval.threshold)
        return (value if self.selection.higher_is_better else -value), probs


def cook(soup: FoldSoup, paths: Sequence[Path], method: str) -> tuple[list[Path], float, np.ndarray]:
    """The soup of ``paths`` (best first): all of them (uniform) or the greedy selection. Returns the ingredients
    used, the soup's signed valid score and its valid probabilities."""
    states = [read_weights(p, soup.device) for p in paths]
    if method == "uniform":
        soup.load(states)
        return list(paths), *soup.evaluate()
    used = [0]
    soup.load([states[0]])
    best, probs = soup.evaluate()
    for i in range(1, len(states)):
        soup.load([states[j] for j in [*used, i]])
        value, trial = soup.evaluate()
        logger.info(
            "greedy soup: %s %s (%.6f vs %.6f)", paths[i].name, "added" if value >= best else "left", value, best
        )
        if value >= best:
            used, best, probs = [*used, i], value, trial
    soup.load([states[j] for j in used])
    return [paths[j] for j in used], best, probs


def write_fold(out: Path, source: Path, soup: FoldSoup, used: Sequence[Path], signed: float, probs) -> dict:
    """The fold's soup folder: the source run's description files, the soup's weights as its best checkpoint, its
    valid predictions and ``soup.json``. Returns the fold's record."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (rundir.CONFIG, rundir.CLASSES, rundir.FOLDS):
        shutil.copyfile(source / name, out / name)
    key, value = soup.selection.key, signed if soup.selection.higher_is_better else -signed
    with files.atomic_path(out / f"best_model_soup_{key}={signed:.4f}.pt") as tmp:
        torch.save(soup.model.state_dict(), tmp)
    rows, ids = soup.loaders.valid_rows, soup.data.source.ids()
    frame = predictions_frame(
        [ids[i] for i in rows], probs, soup.data.task, soup.fold_of[rows], soup.data.source.table.iloc[rows]
    )
    files.write_csv(frame, out / rundir.PREDICTIONS)
    record = {"ingredients": [str(p) for p in used], key: round(value, 6)}
    files.write_text(out / "soup.json", json.dumps(record, indent=1))
    return record


def make_soup(args: SoupConfig) -> Path:
    """Soups every fold of ``args.runs`` into ``args.output``; returns the soup's run folder (see the module doc:
    check, then write).

    Raises:
        FileNotFoundError: a run folder or its checkpoints are missing.
        ValueError: runs of other archs or folds; a checkpoint that cannot be read; an output that is a file, one
            of the runs, or a folder that holds no soup.
    """
    args = pulled(args)
    runs = [rundir.read_fold_runs(run) for run in args.runs]
    if len({len(folds) for folds in runs}) > 1 or len({f.config.model.arch for folds in runs for f in folds}) > 1:
        raise ValueError(f"{' '.join(args.runs)}: soups need runs of one arch with the same folds")
    out = Path(args.output or f"{Path(args.runs[0]).resolve()}-soup")
    check_output(out, [Path(run) for run in args.runs])
    folds = len(runs[0])
    ingredients = [candidates([folds_of_run[k].run_dir for folds_of_run in runs], args.k) for k in range(folds)]
    for path in (p for fold in ingredients for p in fold):
        read_weights(path, mmap=True)  # each opens: a damaged file is named before any model is built
    device = resolve_device(args.device)
    with replacing_folder(out, stale=[rundir.BEST_MODELS]) as build:
        for k in range(folds):
            soup = FoldSoup(runs[0][k].config, device)
            used, signed, probs = cook(soup, ingredients[k], args.method)  # best first
            fold_out = rundir.fold_dir(build, k) if folds > 1 else build
            record = write_fold(fold_out, runs[0][k].run_dir, soup, used, signed, probs)
            best_alone = checkpoint_score(ingredients[k][0])
            print(f"fold {soup.config.split.fold}: {len(used)} checkpoints, {record}; the best one alone "
                  f"{best_alone:.4f}")
            soup.loaders.close()
        if folds > 1:
            shutil.copyfile(Path(args.runs[0]) / rundir.CONFIG, build / rundir.CONFIG)
            # gather_oof names the folder it gathers in, in its summary and its line: the temporary one, which
            # becomes `out`
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                summary = gather_oof(rundir.read_config(build), build)
            files.write_text(build / rundir.CV_SUMMARY, json.dumps(summary | {"run_dir": str(out)}, indent=1))
            print(printed.getvalue().replace(str(build), str(out)), end="")
    return out


def pulled(args: SoupConfig) -> SoupConfig:
    """``args`` with each ``mlflow:<run-id>`` run replaced by its downloaded folder (`share.resolve_run`).

    Raises:
        ValueError: such a run without --output (the downloaded copy is not written to); see `resolve_run`.
    """
    shared = [run for run in args.runs if run.startswith(share.SHARE_PREFIX)]
    if not shared:
        return args
    if args.output is None:
        raise ValueError(f"{shared[0]}: pass --output (the downloaded run is not written to)")
    return dataclasses.replace(args, runs=[str(share.resolve_run(run, args.mlflow)) for run in args.runs])


def check_output(out: Path, runs: Sequence[Path]) -> None:
    """Checks the soup's folder before any work: a new folder, or an earlier soup's (holding ``soup.json``), never
    a file nor one of the runs souped (whose files it would replace).

    Raises:
        ValueError: as said, naming ``--output``.
    """
    check_folder(out, "--output")
    if any(out.resolve() == run.resolve() or run.resolve() in out.resolve().parents for run in runs):
        raise ValueError(f"--output {out}: one of the runs souped (or inside one); give a new folder")
    if out.is_dir() and any(out.iterdir()) and not any(out.glob("**/soup.json")):
        raise ValueError(f"--output {out}: a folder that holds no soup (no soup.json); give a new folder")


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: print(f"soup: {make_soup(parse_args(SoupConfig, argv, prog='python -m src.soup'))}"))


if __name__ == "__main__":
    sys.exit(main())
