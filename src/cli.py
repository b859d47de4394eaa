"""The command line shared by every entry point: config parsing, logging, and one error policy.

Precedence of a training config, lowest first: the dataclass defaults, ``--config FILE`` (or, with
``--resume``, the run folder's saved ``config.yaml``), then the flags. `tyro` builds the CLI from
`src.config.Config`, so ``python -m src.train --help`` lists every field with its doc string, one heading
per group.

Exit codes of every entry point (`run_cli`): 0 success; 2 bad input (a ``ValueError`` or
``FileNotFoundError``, an ``OSError`` such as a full disk or an unwritable folder, CUDA out of memory: one line
``error: <message>`` on stderr, no traceback); 130 interrupted at once (a second
Ctrl-C); a clean stop of training (`src.training.stopping`): 128 + the signal's number (130 Ctrl-C, 143 SIGTERM,
138 SIGUSR1) or 75 for ``--time-limit``, after saving the training state.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import inspect
import io
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, TypeVar

import tyro
import tyro.constructors
from ignite.utils import setup_logger

from src.config import Config, deferred_checks, load_config_file
from src.tracking.rundir import config_path, read_saved_config, resolve_run_dir
from src.utils import distributed
from src.utils.distributed import launched_rank
from src.utils.errors import CleanExit, is_out_of_memory

T = TypeVar("T")
INTERRUPTED = (
    "interrupted: the files written so far are intact; run the same command again (with --run-name, or --resume "
    "<run folder>) to continue from the newest checkpoint"
)


OUT_OF_MEMORY = (
    "out of GPU memory: lower --batch-size (--accumulation-steps N keeps the batch of one optimizer step), or "
    "save memory with --amp bf16 (fp16) or a smaller --img-size"
)


@dataclasses.dataclass
class _TrainCommandLine:
    """The training command line: ``--config`` beside the config's own flags, so that ``--help`` lists it (its value
    is read before tyro parses, by `parse_config`, to set the defaults)."""

    config_file: Annotated[str | None, tyro.conf.arg(name="config", metavar="FILE")] = None
    """A YAML or JSON file of settings: flat keys ('lr: 0.01') or one mapping per group, as in a run's config.yaml
    (`python -m src.kaggle inspect` writes one, train.yaml). The flags override it; it overrides the defaults.
    Without it, --resume RUN starts from that run's config.yaml."""
    config: Annotated[Config, tyro.conf.arg(name="")] = dataclasses.field(default_factory=Config)


def parse_config(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str = "python -m src.train",
    description: str | None = None,
) -> Config:
    """Builds the training config from the defaults, an optional config file and the flags.

    ``--config FILE`` sets the defaults; ``--resume RUN`` without ``--config`` takes the run folder's saved
    ``config.yaml`` as the defaults (not with ``--restart``, which trains the run over with this command's
    settings). ``DRY_RUN=1`` in the environment turns on ``dry_run``.

    Args:
        argv: CLI arguments without the program name; None reads ``sys.argv``.
        environ: environment mapping; None reads ``os.environ``.
        prog: the command ``--help`` and the errors name.
        description: ``--help``'s text above the flags; None: `Config`'s docstring.

    Returns:
        The checked config.

    Raises:
        ValueError: a value is out of range (naming its flag), a bad config file, or a damaged run folder's.
        FileNotFoundError: the config file does not exist.
    """
    environ = os.environ if environ is None else environ
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--resume")
    pre.add_argument("--restart", action="store_true")
    known, rest = pre.parse_known_args(argv)
    if known.restart:
        rest = [*rest, "--restart"]
    if known.config:
        default = load_config_file(known.config)
    elif known.resume and not known.restart and config_path(resolve_run_dir(known.resume)).is_file():
        default = read_saved_config(resolve_run_dir(known.resume))
    else:
        default = Config()
    if known.resume:
        rest = [*rest, "--resume", known.resume]
    command_line = _TrainCommandLine(known.config, default)
    description = inspect.getdoc(Config) if description is None else description
    with deferred_checks():
        config = _tyro_cli(tyro.conf.OmitArgPrefixes[_TrainCommandLine], rest, command_line, prog, description).config
    if environ.get("DRY_RUN", "").strip().lower() in ("1", "true", "yes"):
        config.run.dry_run = True
    return config.checked()


def reflow(text: str | None) -> str | None:
    """A docstring as ``--help`` shows it: dedented, each paragraph (blank-line separated) on one line, for the help
    formatter to wrap at the terminal's width."""
    if text is None:
        return None
    paragraphs = re.split(r"\n[ \t]*\n", inspect.cleandoc(text))
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs if paragraph.strip())


def _reflowed_help() -> tyro.constructors.ConstructorRegistry:
    """A registry for one ``tyro.cli`` call whose struct rule hands on tyro's own spec of each dataclass with every
    field's help text reflowed (`reflow`).

    tyro 1.0.17 joins a docstring's lines before it dedents them and keeps a line break before every line that does
    not start with a letter (``remove_single_line_breaks``, meant for lists; brentyi/tyro#429, #469), so each
    continuation line of an indented field docstring would start a new line in ``--help``. The rule asks the other
    rules for the spec (tyro's public `ConstructorRegistry.get_struct_spec`; ``inside`` keeps it from answering
    itself) and wraps each field's help, lazy as tyro's is; where the help comes from (the docstring, a comment,
    ``metadata["help"]``) is still tyro's choice.
    """
    registry = tyro.constructors.ConstructorRegistry()
    inside = False

    @registry.struct_rule
    def reflowed(info: tyro.constructors.StructTypeInfo):
        nonlocal inside
        if inside:
            return None
        inside = True
        try:
            spec = tyro.constructors.ConstructorRegistry.get_struct_spec(info)
        finally:
            inside = False
        if not isinstance(spec, tyro.constructors.StructConstructorSpec):
            return spec
        fields = tuple(dataclasses.replace(field, helptext=_lazy_reflow(field)) for field in spec.fields)
        return dataclasses.replace(spec, fields=fields)

    return registry


def _lazy_reflow(field: tyro.constructors.StructFieldSpec) -> Callable[[], str | None]:
    """``field``'s help, reflowed when tyro asks for it; a group without its own help (``Config.competition``) gets
    its class's docstring, which tyro would otherwise show with the same line breaks (not the signature that
    `dataclasses` writes into a class without one)."""

    def helptext() -> str | None:
        text = field.helptext() if callable(field.helptext) else field.helptext
        if text is None and dataclasses.is_dataclass(field.type):
            text = inspect.getdoc(field.type)
            text = None if text and text.startswith(f"{field.type.__name__}(") else text
        return reflow(text)

    return helptext


def _tyro_cli(config_class, args: Sequence[str], default=None, prog: str | None = None, description: str | None = None):
    """``tyro.cli`` with its errors (unknown flag, wrong type, invalid choice, missing value) as one ValueError
    line, with the nearest flag to a mistyped one (`_one_line`); ``--help`` prints as usual, under ``prog`` (the
    command as typed, ``python -m src.train``: tyro would name the file), each field's help one paragraph
    (`_reflowed_help`)."""
    captured = io.StringIO()
    kwargs = {"registry": _reflowed_help()} | ({"prog": prog} if prog else {})
    kwargs |= {} if default is None else {"default": default}
    kwargs |= {} if description is None else {"description": description}
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            return tyro.cli(config_class, args=args, **kwargs)
    except SystemExit as exit:
        if not exit.code:
            print(captured.getvalue(), end="")
            raise
        box = captured.getvalue()
    raise ValueError(_one_line(box, lambda: _known_flags(config_class, kwargs))) from None


def _known_flags(config_class, kwargs: dict) -> list[str]:
    """Every flag of ``config_class``'s command line, as its ``--help`` lists them."""
    captured = io.StringIO()
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        tyro.cli(config_class, args=["--help"], **kwargs)
    return list(dict.fromkeys(re.findall(r"(?<![\w-])--[a-z][\w-]*", captured.getvalue())))


def _one_line(box: str, known_flags: Callable[[], list[str]] | None = None) -> str:
    """tyro's error box (title, message, suggestions or help, separated by rules) as one line. A mistyped flag gets
    the known flag nearest to it by edit distance (``--epoch`` -> ``--epochs``; tyro lists its candidates
    alphabetically), else tyro's first suggestion."""
    parts = [" ".join(part.split()) for part in re.split(r"\n\s*-{5,}\s*", box)]
    message = parts[1] if len(parts) > 1 else parts[0]
    suggestion = next((p for p in parts[2:] if p.startswith("Perhaps you meant")), "")
    flags = re.findall(r"--[\w-]+", suggestion)
    unknown = re.findall(r"--[\w-]+", message.split("Unrecognized options:", 1)[1]) if "Unrecognized" in message else []
    if unknown:
        candidates = list(dict.fromkeys(flags + (known_flags() if known_flags else [])))
        nearest = difflib.get_close_matches(unknown[0], candidates, n=1, cutoff=0.6)
        flags = nearest or flags
    return message + (f"; did you mean {flags[0]}?" if flags else "")


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
    except RuntimeError as error:
        if not is_out_of_memory(error):  # cuDNN and cuBLAS report running out of memory as plain RuntimeErrors
            raise
        print(f"error: {OUT_OF_MEMORY}", file=sys.stderr)
        return 2
    except OSError as error:  # an unwritable folder, a full disk: what was written before is intact (src.utils.files)
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except CleanExit as stop:
        if distributed.is_main():
            print(stop.message(), file=sys.stderr)
        return stop.exit_code
    return 0


def parse_args(config_class: type[T], argv: Sequence[str] | None = None, prog: str | None = None) -> T:
    """A tool's own flags (``PredictConfig``, ``EnsembleConfig``) parsed by tyro (its errors as one line); ``prog``:
    the command ``--help`` names (``python -m src.predict``)."""
    return _tyro_cli(config_class, sys.argv[1:] if argv is None else argv, prog=prog)
