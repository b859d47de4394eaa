"""The command-line reference and the README agree with the program: ``docs/cli.md`` is what the parsers print,
and every flag of a README command exists in that command's parser."""

import re
import shlex
from pathlib import Path

import pytest

from src.tools.cli_reference import COMMANDS, help_text, reference

ROOT = Path(__file__).resolve().parent.parent


def test_docs_cli_md_is_what_the_parsers_print():
    written = (ROOT / "docs" / "cli.md").read_text()
    hint = "docs/cli.md differs from the program's --help: run python -m src.tools.cli_reference"
    assert written == reference(), hint


def readme_commands() -> list[tuple[str, list[str]]]:
    """(the command, e.g. ``python -m src.kaggle submit``, its flags) of each ``python -m src...`` or ``-m src...``
    command in the README's bash blocks, continuation lines joined and comments dropped."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if "-m src." not in line:
                continue
            words = shlex.split(line.replace("<", "").replace(">", ""), posix=True)
            start = words.index("-m") + 1
            module = words[start]
            subcommands = {"src.kaggle": None, "src.runs": {"push"}, "src.sweep": {"report"}}  # None: any word
            known = subcommands.get(module, set())
            following = words[start + 1] if len(words) > start + 1 else None
            sub = following if module in subcommands and (known is None or following in known) else None
            command = f"python -m {module}" + (f" {sub}" if sub and not sub.startswith("-") else "")
            flags = [w.split("=")[0] for w in words[start + 1 :] if w.startswith("--")]
            found.append((command, flags))
    return found


def test_the_readme_names_commands_of_the_reference():
    commands = {command for command, _, _ in COMMANDS}
    used = readme_commands()
    assert len(used) >= 30
    assert {command for command, _ in used} <= commands


@pytest.mark.parametrize("command", sorted({c for c, _ in readme_commands()}))
def test_every_flag_of_a_readme_command_is_in_its_parser(command):
    module, args = next((m, a) for c, m, a in COMMANDS if c == command)
    shown = help_text(module, args)
    if command == "python -m src.sweep":  # the flags that are not the sweep's are the trainer's
        shown += help_text("src.train")
    missing = sorted({flag for c, flags in readme_commands() if c == command for flag in flags} - set(
        re.findall(r"--[a-z][\w-]*", shown)))
    assert not missing, f"README: {command} has no flag {missing}"


def test_the_readme_lists_every_training_flag_under_its_group_and_no_other():
    """README's "Flags" section names each config field's flag (``--no-x`` for a switch on by default) in its
    group's line; defaults and meanings live in docs/cli.md only."""
    from src.config import FIELD_GROUPS

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Flags") : text.index("## Layout")]
    lines = re.finditer(r"- \*\*(\w+)\*\*: (.*)", section)
    listed = {line.group(1): set(re.findall(r"`(--[a-z][\w-]*)`", line.group(2))) for line in lines}
    for name, group in FIELD_GROUPS.items():
        if name == "meta_features":  # inferred from --meta-cols, never set by hand
            continue
        flag = f"--{name.replace('_', '-')}"
        assert flag in listed.get(group, set()) or f"--no-{flag[2:]}" in listed.get(group, set()), (name, group)
    train_help = set(re.findall(r"--[a-z][\w-]*", help_text("src.train")))
    assert set().union(*listed.values()) <= train_help
