"""The command line shared by every entry point: config parsing, logging, and one error policy.

Precedence of a training config, lowest first: the dataclass defaults, ``--config FILE`` (or, with
``--resume``, the run folder's saved ``config.yaml``), then the flags. `tyro` builds the CLI from
`src.config.Config`, so ``python -m src.train --help`` lists every field with its doc string, one heading
per group.

Exit codes of every entry point (`run_cli`): 0 success; 2 bad input (a ``ValueError`` or
``FileNotFoundError``: one line ``error: <message>`` on stderr, no traceback); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import tyro
from ignite.utils import setup_logger

from src.config import Config, deferred_checks, load_config_file
from src.distributed import launched_rank
from src.rundir import config_path, resolve_run_dir

T = TypeVar("T")
INTERRUPTED = "interrupted: the last complete checkpoint_<epoch>.pt is intact; continue with --resume <run folder>"


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Builds the training config from the defaults, an optional config file and the flags.

    ``--config FILE`` sets the defaults; ``--resume RUN`` without ``--config`` takes the run folder's saved
    ``config.yaml`` as the defaults. ``DRY_RUN=1`` in the environment turns on ``dry_run``.

    Args:
        argv: CLI arguments without the program name; None reads ``sys.argv``.
        environ: environment mapping; None reads ``os.environ``.

    Returns:
        The checked config.

    Raises:
        ValueError: a value is out of range (naming its flag), or a bad config file.
        FileNotFoundError: the config file does not exist.
    """
    environ = os.environ if environ is None else environ
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--resume")
    known, rest = pre.parse_known_args(argv)
    if known.config:
        default = load_config_file(known.config)
    elif known.resume and config_path(resolve_run_dir(known.resume)).is_file():
        default = load_config_file(config_path(resolve_run_dir(known.resume)))
    else:
        default = Config()
    if known.resume:
        rest = [*rest, "--resume", known.resume]
    with deferred_checks():
        config = tyro.cli(tyro.conf.OmitArgPrefixes[Config], args=rest, default=default)
    if environ.get("DRY_RUN", "").strip().lower() in ("1", "true", "yes"):
        config.run.dry_run = True
    return config.checked()


def setup_logging() -> None:
    """Logs the ``src`` package's INFO messages to stderr (ignite's `setup_logger`), in the process of rank 0 only
    under torchrun; modules log through ``logging.getLogger(__name__)``. The records still reach the root
    logger's handlers (pytest's, a notebook's): ignite turns propagation off, which would hide them there."""
    rank = launched_rank()  # the process group does not exist yet
    # reset: the modules' loggers already exist, and ignite leaves an existing logger without a handler otherwise
    setup_logger("src", level=logging.INFO, distributed_rank=rank, reset=True).propagate = rank == 0


def run_cli(command: Callable[[], object], interrupted: str = "interrupted") -> int:
    """Runs ``command`` under the shared error policy and returns the exit code (see the module doc).

    Args:
        command: the entry point's work, parsing included.
        interrupted: the line printed on Ctrl-C (what was kept, how to continue).
    """
    setup_logging()
    try:
        command()
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    return 0


def parse_args(config_class: type[T], argv: Sequence[str] | None = None) -> T:
    """A tool's own flags (``PredictConfig``, ``EnsembleConfig``) parsed by tyro."""
    return tyro.cli(config_class, args=argv)
