"""The ``python -m src.kaggle`` commands: download, inspect, submit, submissions, bundle (README "From Kaggle and
back"). Each is a dataclass of its flags; `main` parses one (tyro subcommands) and runs it under the shared
error policy (`src.cli.run_cli`: one line, exit 2)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import operator
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import tyro

from src.cli import parse_args, run_cli
from src.kaggle import client, layout
from src.tracking import rundir, share


@dataclasses.dataclass
class Download:
    """Download and unzip a competition's files (continuing an interrupted download), then inspect them."""

    competition: tyro.conf.Positional[str]
    """The competition's name, as in its URL."""
    out: str | None = None
    """The folder; None: data/<competition>."""


@dataclasses.dataclass
class Inspect:
    """Read a competition folder into <folder>/train.yaml, printing the evidence for every choice."""

    folder: tyro.conf.Positional[str]
    """The competition's files, unzipped."""
    competition: str | None = None
    """The competition's name (for submit and bundle); `download` sets it."""
    folds_from: str | None = None
    """A run folder or mlflow:<run-id> whose folds (its folds.csv: ids to folds) the training uses, as --folds-from:
    a teammate's runs then blend with it; checked to hold exactly the training table's ids."""
    mlflow: str | None = None
    """Tracking URI of --folds-from mlflow:<run-id>; None: MLFLOW_TRACKING_URI (training needs it too)."""


@dataclasses.dataclass
class Submit:
    """Check a run's submission.csv against the sample submission, submit it, wait for the score and record it."""

    folder: tyro.conf.Positional[str]
    """A run folder or an ensemble folder holding submission.csv, or mlflow:<run-id>: a run shared with its
    submission.csv, copied into --out and submitted from there."""
    message: Annotated[str, tyro.conf.arg(aliases=["-m"])]
    """The submission's message, shown beside its score on Kaggle."""
    timeout: float = 600.0
    """Seconds to wait for the score before leaving it pending."""
    poll: float = 10.0
    """Seconds between two looks at the score."""
    mlflow: str | None = None
    """Tracking URI of a folder given as mlflow:<run-id>; None: MLFLOW_TRACKING_URI."""
    out: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """Where a shared mlflow:<run-id> is copied to and submitted from (the record is written there, never into the
    download cache); None: experiments/<its run folder's name>-<the id's first 8 characters>."""


@dataclasses.dataclass
class Submissions:
    """List a competition's submissions with the run folders that made them (filling in pending scores)."""

    competition: tyro.conf.Positional[str]
    """The competition's name, as in its URL."""
    runs: str = "experiments"
    """The folder of run folders to match submissions to."""


@dataclasses.dataclass
class Bundle:
    """Write a folder to upload as a Kaggle Dataset that predicts the competition offline (a code competition)."""

    folder: tyro.conf.Positional[str]
    """A `--fold all` run folder or an ensemble folder, or mlflow:<run-id>: a run shared with src.runs push
    --with-checkpoints (downloaded once into ~/.cache/kaggle-trainer/mlflow)."""
    out: str = "bundle"
    """The bundle folder."""
    image_has: str | None = None
    """`pip freeze` of the competition image (run once in a Kaggle notebook); None: the listing shipped with the
    trainer (Kaggle's CPU image, see src/kaggle/kaggle_image.txt)."""
    wheels_from: str | None = None
    """A local folder of wheels to take the packages from instead of the package registry."""
    half: bool = False
    """Store the checkpoints as fp16 (half the size; see README for the effect on the score)."""
    tta: str = "none"
    """Test-time augmentation of the notebook's predictions (as src.predict --tta)."""
    tta_merge: Literal["mean", "geometric", "max"] = "mean"
    """How the TTA variants are combined."""
    upload: str | None = None
    """<user>/<slug>: create the Kaggle Dataset (or a new version of it) from the bundle."""
    push: bool = False
    """Also push inference.ipynb as a Kaggle notebook (needs --upload)."""
    mlflow: str | None = None
    """Tracking URI of a folder (or ensemble member) given as mlflow:<run-id>; None: MLFLOW_TRACKING_URI."""


# The subcommands by name: the command line's choices and the suggestions for a misspelt one come from here.
COMMANDS = {"download": Download, "inspect": Inspect, "submit": Submit, "submissions": Submissions, "bundle": Bundle}
Command = functools.reduce(operator.or_, [Annotated[cls, tyro.conf.subcommand(name)] for name, cls in COMMANDS.items()])


def run(command, connect=client.connect) -> object:
    """Runs one parsed command; ``connect`` gives the Kaggle client (the tests pass a stand-in)."""
    from src.kaggle import bundle, download, publish, submit

    if isinstance(command, Download):
        out = Path(command.out or Path("data") / command.competition)
        download.download(connect(), command.competition, out)
        return inspect(out, command.competition, "the competition it was downloaded from")
    if isinstance(command, Inspect):
        return inspect(Path(command.folder), command.competition, "given with --competition", command)
    if isinstance(command, Submit):
        if not command.message.strip():
            raise ValueError("-m: give the submission a message, e.g. -m 'effnet-b0 5 folds, flip TTA'")
        folder = submittable(command)
        return submit.submit(connect, folder, command.message, command.timeout, command.poll)
    if isinstance(command, Submissions):
        table = submit.submissions(connect(), command.competition, Path(command.runs))
        print(table.to_string(index=False) if len(table) else f"{command.competition}: no submissions yet")
        return table
    if command.push and not command.upload:
        raise ValueError("--push: needs --upload <user>/<slug> (the notebook reads the bundle from that dataset)")
    out = Path(command.out)
    manifest = bundle.bundle(share.resolve_run(command.folder, command.mlflow), out, command)
    if command.upload:
        api = connect()
        done = publish.upload(api, out, command.upload, f"{manifest['source']} ({manifest['created']})")
        print(f"dataset {command.upload}: {done}")
        if command.push:
            print(f"notebook: {publish.push(api, out)}")
    return manifest


def submittable(command: Submit) -> Path:
    """The folder ``submit`` reads and records into: a local one as it is; a shared ``mlflow:<run-id>`` checked
    (`submit.checked`) in the download cache, then copied out of it (`share.local_copy`; ``--out``).

    Raises:
        ValueError: ``--out`` with a local folder, a shared run without submission.csv (what to do instead), or
            see `submit.checked` and `share.local_copy`; FileNotFoundError, ConnectionError: see `resolve_run`.
    """
    from src.kaggle import submit

    if not command.folder.startswith(share.SHARE_PREFIX):
        if command.out is not None:
            raise ValueError(f"--out {command.out}: only for a shared mlflow:<run-id>; {command.folder} is "
                             "submitted where it is")
        return Path(command.folder)
    cached = share.resolve_run(command.folder, command.mlflow)
    if not (cached / rundir.SUBMISSION).is_file():
        raise ValueError(f"{command.folder}: shared without {rundir.SUBMISSION}; predict it first: python -m "
                         f"src.predict --run {command.folder} --output-dir DIR, then submit DIR")
    submit.checked(cached)
    return share.local_copy(command.folder, command.mlflow, command.out)


def inspect(folder: Path, competition: str | None, source: str, flags: Inspect | None = None) -> layout.Finding:
    """Inspects ``folder``, writes its train.yaml (with ``--folds-from``, once its folds are checked:
    `layout.decide_folds_from`) and prints the evidence, the undecided and the commands."""
    finding = layout.inspect_folder(folder, competition, source)
    if flags is not None and flags.folds_from:
        layout.decide_folds_from(finding, flags.folds_from, flags.mlflow)
    path = layout.write_train_yaml(finding)
    print(f"{folder}:")
    for line in finding.evidence:
        print(f"  {line}")
    for line in finding.undecided:
        print(f"  NOT DECIDED: {line}")
    print(f"wrote {path}; train and predict with:")
    print(f"  python -m src.train --config {path} --fold all")
    print("  python -m src.predict --run experiments/<run>   # the test set and sample submission come from the run")
    return finding


def parse_command(argv: Sequence[str] | None = None):
    """The parsed subcommand (a dataclass above).

    Raises:
        ValueError: an unknown subcommand (the nearest one suggested), or tyro's error as one line.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        nearest = difflib.get_close_matches(argv[0], COMMANDS, n=1)  # as for flags and config keys
        guess = f"; did you mean {nearest[0]}?" if nearest else ""
        raise ValueError(f"unknown command {argv[0]!r} (the commands: {', '.join(COMMANDS)}){guess}")
    return parse_args(Command, argv, prog="python -m src.kaggle")


def main(argv: Sequence[str] | None = None, connect=client.connect) -> int:
    return run_cli(lambda: run(parse_command(argv), connect))


if __name__ == "__main__":
    sys.exit(main())
