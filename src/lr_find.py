"""Learning-rate range test: ``python -m src.lr_find --arch effnet-b0 [training flags] [--lr-find-iters 100]``.

Trains the configured model on the configured data for a few iterations while the learning rate rises
exponentially from ``--lr-find-start`` to ``--lr-find-end`` (Smith, "Cyclical Learning Rates for
Training Neural Networks", WACV 2017, https://arxiv.org/abs/1506.01186), with ignite's
`FastaiLRFinder`, which restores the model and optimizer afterwards. Saves the loss-vs-lr plot
(``lr_find.png``) and the curve (``lr_find.csv``) to ``<output-dir>/lr_find-<arch>/`` and prints
ignite's suggested learning rate (the steepest descent of the smoothed loss).

Takes every training flag (data layout, arch, batch size, accumulation, mixup, ...); the schedule,
evaluation and checkpoint flags do not apply.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from ignite.handlers import FastaiLRFinder
from ignite.utils import manual_seed

from src.cli import parse_config, run_cli
from src.config import Config
from src.tracking import rundir
from src.training.assembly import assemble, resolve_device
from src.training.trainer import setup_training
from src.utils import files

logger = logging.getLogger("src.lr_find")  # not __name__: "__main__" under python -m


def find_lr(
    config: Config, iters: int = 100, start_lr: float = 1e-7, end_lr: float = 1.0, out_dir: Path | None = None
) -> tuple[float | None, pd.DataFrame]:
    """Runs the range test.

    Args:
        config: a training `Config`.
        iters: iterations of the test (micro-batches).
        start_lr, end_lr: the range, swept exponentially.
        out_dir: where ``lr_find.png`` and ``lr_find.csv`` go; None writes nothing.

    Returns:
        (suggested lr, or None when the curve has no clear descent, e.g. a range too narrow; the curve as a
        DataFrame with columns lr and loss).

    Raises:
        ValueError: bad config or data, or a range with start_lr >= end_lr.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"--lr-find-start {start_lr} / --lr-find-end {end_lr}: expected 0 < start < end")
    manual_seed(config.run.seed)
    parts = assemble(config, resolve_device(config.run.device))
    training = setup_training(parts.config, parts.model, parts.data.task, parts.steps, parts.device)
    loaders, model = parts.loaders, parts.model
    finder = FastaiLRFinder()
    to_save = {"model": model, "optimizer": training.optimizer}
    with finder.attach(
        training.trainer,
        to_save,
        output_transform=lambda out: out["loss"],
        num_iter=iters,
        start_lr=start_lr,
        end_lr=end_lr,
    ) as finding:
        finding.run(loaders.train, max_epochs=max(1, -(-iters // len(loaders.train))))
    results = finder.get_results()
    # one lr per parameter group (decay / no decay) moving together: report the first group's
    lrs = [lr[0] if isinstance(lr, list | tuple) else lr for lr in results["lr"]]
    curve = pd.DataFrame({"lr": lrs, "loss": results["loss"]})
    try:
        suggested = finder.lr_suggestion()
        suggestion = float(suggested[0] if isinstance(suggested, list | tuple) else suggested)
    except RuntimeError as error:  # ignite: the curve is not U-shaped
        logger.warning("no lr suggestion: %s", error)
        suggestion = None
    if out_dir is not None:
        save_curve(finder, curve, out_dir, show_suggestion=suggestion is not None)
    return suggestion, curve


def save_curve(finder: FastaiLRFinder, curve: pd.DataFrame, out_dir: Path, show_suggestion: bool) -> None:
    """Writes the curve (``lr_find.csv``) and ignite's loss-vs-lr plot (``lr_find.png``) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files.write_csv(curve, out_dir / rundir.LR_FIND_CSV)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    skip = {"skip_start": min(10, len(curve) // 4), "skip_end": min(5, len(curve) // 4)}
    finder.plot(ax=ax, display_suggestion=show_suggestion, **skip)
    fig.savefig(out_dir / rundir.LR_FIND_PLOT, dpi=100, bbox_inches="tight")
    plt.close(fig)


HELP = """LR range test (Smith 2017): training iterations with the lr growing exponentially from start to end.

Writes lr_find.csv and lr_find.png to <output-dir>/lr_find-<arch>/ and prints the suggested lr. Its own flags:
  --lr-find-iters INT      training iterations (micro-batches) of the sweep from start to end (default: 100)
  --lr-find-start FLOAT    the low end of the sweep (default: 1e-07)
  --lr-find-end FLOAT      the lr reached after --lr-find-iters iterations (default: 1.0)
The curve lists each iteration's loss against the lr after its update, as ignite's FastaiLRFinder records them:
from start x (end/start)^(1/iters) up to one step past end (it runs one iteration more than asked).

Every training flag below sets up the model, the data and the optimizer as `python -m src.train` would."""


def main(argv: Sequence[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--lr-find-iters", type=int, default=100)
    own.add_argument("--lr-find-start", type=float, default=1e-7)
    own.add_argument("--lr-find-end", type=float, default=1.0)
    args, rest = own.parse_known_args(argv)

    def command() -> None:
        config = parse_config(rest, prog="python -m src.lr_find", description=HELP)
        out_dir = None if config.run.dry_run else rundir.lr_find_dir(config)
        suggestion, curve = find_lr(config, args.lr_find_iters, args.lr_find_start, args.lr_find_end, out_dir)
        shown = f"{suggestion:.2e}" if suggestion else "none (widen the range)"
        lrs = f"lr {curve['lr'].iloc[0]:.1e} to {curve['lr'].iloc[-1]:.1e}"
        plot = out_dir / rundir.LR_FIND_PLOT if out_dir else "none (dry run)"
        print(f"suggested lr {shown} ({len(curve)} iterations, {lrs}); plot: {plot}")

    return run_cli(command)


if __name__ == "__main__":
    sys.exit(main())
