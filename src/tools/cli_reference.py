"""The flag reference, ``docs/cli.md``, from each entry point's own parser: ``python -m src.tools.cli_reference``.

Every entry point prints its ``--help`` (tyro or argparse, at a fixed width of `WIDTH` columns) into one Markdown
page, so the reference cannot say what the program does not; ``tests/test_cli_reference.py`` fails when the file
differs from what the parsers print (then run this command and commit the file).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

WIDTH = 110  # columns the help is laid out in
OUT = Path("docs/cli.md")

# (the command as typed, its module, the arguments before --help): in the order of the competitor's path
COMMANDS = (
    ("python -m src.train", "src.train", ()),
    ("python -m src.lr_find", "src.lr_find", ()),
    ("python -m src.predict", "src.predict", ()),
    ("python -m src.ensemble", "src.ensemble", ()),
    ("python -m src.soup", "src.soup", ()),
    ("python -m src.runs", "src.runs", ()),
    ("python -m src.runs push", "src.runs", ("push",)),
    ("python -m src.sweep", "src.sweep", ()),
    ("python -m src.sweep report", "src.sweep", ("report",)),
    ("python -m src.kaggle", "src.kaggle.cli", ()),
    *((f"python -m src.kaggle {sub}", "src.kaggle.cli", (sub,))
      for sub in ("download", "inspect", "submit", "submissions", "bundle")),
    ("python -m src.tools.export_digits", "src.tools.export_digits", ()),
    ("python -m src.tools.make_photos", "src.tools.make_photos", ()),
    ("python -m src.tools.strokes_to_chunks", "src.tools.strokes_to_chunks", ()),
)


@contextlib.contextmanager
def _fixed_width() -> Iterator[None]:
    """The help laid out at `WIDTH` columns, whatever the terminal (argparse and tyro read ``COLUMNS``)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def help_text(module: str, args: tuple[str, ...] = ()) -> str:
    """What ``python -m <module> <args> --help`` prints (run in this process).

    Raises:
        RuntimeError: the entry point printed no help (it did not exit on ``--help``).
    """
    main: Callable = importlib.import_module(module).main
    argv = [*args, "--help"]
    captured = io.StringIO()
    saved_argv = sys.argv
    sys.argv = [module, *argv]  # the argparse tools read sys.argv
    try:
        with _fixed_width(), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            try:
                main(argv) if _takes_argv(main) else main()
            except SystemExit:
                pass
    finally:
        sys.argv = saved_argv
    text = captured.getvalue()
    if "usage:" not in text:
        raise RuntimeError(f"{module} {' '.join(argv)} printed no help: {text[:200]!r}")
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _takes_argv(main: Callable) -> bool:
    return main.__code__.co_argcount > 0


def reference() -> str:
    """The whole page: a heading and the help of each of `COMMANDS`."""
    parts = [
        "# Command-line reference\n",
        "Written by `python -m src.tools.cli_reference` from each entry point's own `--help`; "
        "`tests/test_cli_reference.py` checks that it matches the program. Do not edit by hand.\n",
        *(f"- [`{command}`](#{_anchor(command)})" for command, _, _ in COMMANDS),
        "",
    ]
    for command, module, args in COMMANDS:
        parts += [f"## {command}\n", "```text", help_text(module, args), "```\n"]
    return "\n".join(parts)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, spaces to '-', other punctuation but '-' and '_' dropped."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"the Markdown file to write (default: {OUT})")
    args = parser.parse_args(argv)
    from src.utils import files

    args.out.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(args.out, reference())
    print(f"wrote {args.out}: {len(COMMANDS)} commands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
