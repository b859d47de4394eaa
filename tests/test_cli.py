"""The shared command line (src.cli): config from defaults, a file and flags; grouped --help; the error policy."""

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.cli import parse_config, reflow, run_cli
from src.config import FIELD_GROUPS, Config
from src.tools.cli_reference import COMMANDS, help_text


def test_defaults_and_flags():
    config = parse_config(["--arch", "densenet121", "--accumulation-steps", "4", "--mixup-alpha", "0.4"], environ={})
    assert config.model.arch == "densenet121" and config.step.accumulation_steps == 4
    assert config.regularisation.mixup_alpha == 0.4
    assert config.split.folds == 5 and config.split.fold == 0 and not config.run.dry_run


def test_dry_run_from_environment():
    assert parse_config([], environ={"DRY_RUN": "1"}).run.dry_run
    assert not parse_config([], environ={"DRY_RUN": "0"}).run.dry_run


def test_config_file_then_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("arch: effnet-b1\nlr: 0.01\nepochs: 3\n")
    config = parse_config(["--config", str(path), "--lr", "0.02"], environ={})
    assert (config.model.arch, config.optim.lr, config.optim.epochs) == ("effnet-b1", 0.02, 3)
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"batch_size": 16}))
    assert parse_config(["--config", str(json_path)], environ={}).loader.batch_size == 16


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        parse_config(["--config", str(tmp_path / "nope.yaml")], environ={})


@pytest.mark.parametrize(
    "flags,field",
    [
        (["--fold", "5"], "--fold"),
        (["--accumulation-steps", "0"], "--accumulation-steps"),
        (["--label-smoothing", "1.5"], "--label-smoothing"),
        (["--early-stopping-start-epoch", "0"], "--early-stopping-start-epoch"),
        (["--mean", "0.1,x"], "--mean '0.1,x': expected comma-separated numbers"),
        (["--img-size-schedule", "32"], "--img-size-schedule '32': bad entry"),
    ],
)
def test_out_of_range_values_are_named(flags, field):
    with pytest.raises(ValueError, match=field):
        parse_config(flags, environ={})


@pytest.mark.parametrize(
    "flags,start",
    [
        ([], 14),  # one-cycle over 18 epochs after a 1-epoch warmup: three quarters of the decay at epoch 13.75
        (["--scheduler", "cosine", "--epochs", "30", "--warmup-epochs", "2"], 23),
        (["--scheduler", "plateau"], 1),
        (["--scheduler", "none", "--epochs", "30"], 1),
        (["--early-stopping-start-epoch", "3"], 3),
    ],
)
def test_early_stopping_waits_for_an_annealing_schedule(flags, start):
    assert parse_config(flags, environ={}).early_stopping_start == start


def test_every_toolbox_flag_is_a_config_file_key(tmp_path):
    values = {
        "img_size_schedule": "24:0,32:4",
        "freeze_epochs": 1,
        "backbone_lr_mult": 0.1,
        "val_every": 0.25,
        "swa_start_epoch": 3,
        "head": "arcface",
        "margin": 20.0,
        "center_loss": 0.01,
        "metric": "map@3",
        "fold": "all",
        "compile": True,
        "pseudo_threshold": 0.9,
        "output_stride": 16,
        "early_stopping_start_epoch": 4,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    config = parse_config(["--config", str(path), "--lr", "1e-3"], environ={})
    flat = config.flat()
    values["img_size_schedule"] = [[24, 0], [32, 4]]  # typed: (size, epoch) pairs
    assert {k: flat[k] for k in values} == values and config.optim.lr == 1e-3
    path.write_text(yaml.safe_dump({**values, "metric": "map3"}))
    with pytest.raises(ValueError, match="--metric 'map3'"):
        parse_config(["--config", str(path)], environ={})


@pytest.mark.parametrize("bad", ["0", "-0.5", "1.5"])
def test_bad_val_every_is_named(bad):
    with pytest.raises(ValueError, match="--val-every"):
        parse_config(["--val-every", bad], environ={})


def test_help_lists_every_config_field_as_a_flag_under_its_group():
    result = subprocess.run(
        [sys.executable, "-m", "src.train", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert result.returncode == 0
    flags = set(re.findall(r"--[a-z0-9-]+", result.stdout))
    expected = {"--" + name.replace("_", "-") for name in FIELD_GROUPS}
    assert expected <= flags  # every field keeps its flat flag (no group prefix)
    assert not {f for f in flags if "." in f or f.startswith(("--model-", "--optim-"))}
    for group in ("model", "data", "split", "loader", "optim", "step", "loss", "regularisation", "eval", "run"):
        assert f"{group} options" in result.stdout  # one heading per group


def _hard_breaks(shown: str) -> list[str]:
    """The lines of a tyro ``--help`` whose entry goes on below although the next line's first word would have fit
    on them: a line break kept from a docstring's source, not made by the formatter. The width is that of the
    section's rule (a line of dashes); "(default: ...)" is not broken by the formatter."""
    found, width = [], 0
    lines = [line.rstrip() for line in shown.splitlines()]
    for line, after in zip(lines, lines[1:]):
        if re.fullmatch(r" *-{20,}", line):
            width = len(line)
            continue
        flag_alone = line.lstrip().startswith("-") and "  " not in line.strip()  # its help starts below
        if not line.strip() or flag_alone or not re.match(r" {20,}\S", after):
            continue
        word = re.match(r"\(default: [^)]*\)|\S+", after.strip()).group()
        if len(line) + 1 + len(word) <= width - 2:
            found.append(f"{line.strip()} / {after.strip()}")
    return found


@pytest.mark.parametrize("command, module, args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_help_paragraphs_are_reflowed_not_broken_where_the_source_line_ended(command, module, args):
    shown = help_text(module, args)
    assert not _hard_breaks(shown), f"{command} --help: a line break kept from the source"
    if module == "src.train":
        entry = shown.split("--in-chans", 1)[1].split("\n  --", 1)[0]
        assert "The pixel-CSV and parquet layouts read this many values per pixel" in " ".join(entry.split())


def test_the_breaks_check_finds_a_docstring_line_break():
    rule, indent = " " + "-" * 75, " " * 24
    wrapped = [rule, "  --in-chans INT        Input channels; None infers it from the data. The", f"{indent}pixel-CSV"]
    kept = [rule, "  --in-chans INT        Input channels; None infers it from the data.", f"{indent}The pixel-CSV"]
    assert _hard_breaks("\n".join(wrapped)) == [] and len(_hard_breaks("\n".join(kept))) == 1


def test_reflow_joins_the_lines_of_each_paragraph():
    assert reflow("Input channels; None infers\n    it from the data.\n\n    (1 for the digits)\n") == (
        "Input channels; None infers it from the data.\n\n(1 for the digits)"
    )
    assert reflow(None) is None


@pytest.mark.parametrize("module", ["src.train", "src.lr_find"])
def test_help_lists_config_resume_and_restart(module):
    shown = help_text(module)
    assert re.search(r"^  --config FILE +A YAML or JSON file of settings", shown, re.M)
    assert "--resume {None}|STR" in shown and "--restart, --no-restart" in shown


def test_comma_lists_are_typed_and_old_string_values_still_parse():
    config = parse_config(
        ["--label-col", "a,b", "--head-weights", "2,1", "--channels", "1,2,3", "--mean", "0.5", "--std", "0.25"],
        environ={},
    )
    assert config.data.label_col == ("a", "b") and config.data.head_weights == (2.0, 1.0)
    assert config.data.channels == ("1", "2", "3") and config.loader.mean == (0.5,) and config.loader.std == (0.25,)


def test_run_cli_exit_codes_and_one_line_errors(capsys):
    def bad():
        raise ValueError("--lr -1.0: expected a positive float")

    def interrupted():
        raise KeyboardInterrupt

    assert run_cli(lambda: None) == 0
    assert run_cli(bad) == 2
    assert capsys.readouterr().err == "error: --lr -1.0: expected a positive float\n"
    assert run_cli(interrupted, interrupted="kept checkpoint_3.pt") == 130
    assert capsys.readouterr().err == "kept checkpoint_3.pt\n"


def test_resume_takes_the_run_folder_config_as_defaults(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"arch": "resnet18", "lr": 0.02, "label_col": "a,b"}))  # flat
    config = parse_config(["--resume", str(run), "--lr", "0.01"], environ={})
    assert config.model.arch == "resnet18" and config.optim.lr == 0.01 and config.data.label_col == ("a", "b")
    assert config.run.resume == str(run)


def test_a_run_saved_before_a_default_changed_resumes_as_it_trained_and_a_config_file_takes_the_default(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = Config.of(img_size=28).to_dict()
    del saved["loader"]["batch_aug"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))  # saved before --batch-aug
    assert parse_config(["--resume", str(run)], environ={}).loader.batch_aug is False
    assert parse_config(["--resume", str(run), "--batch-aug"], environ={}).loader.batch_aug is True
    (run / "config.yaml").write_text(yaml.safe_dump(Config.of(batch_aug=True).to_dict(), sort_keys=False))
    assert parse_config(["--resume", str(run)], environ={}).loader.batch_aug is True
    (tmp_path / "my.yaml").write_text(yaml.safe_dump({"img_size": 28}))
    assert parse_config(["--config", str(tmp_path / "my.yaml")], environ={}).loader.batch_aug is True


def test_run_cli_prints_the_info_lines_of_every_src_module(capsys):
    logging.getLogger("src.tracking.history")  # the modules' loggers exist before logging is set up, as in a real run
    assert run_cli(lambda: logging.getLogger("src.tracking.history").info("epoch 1: valid_accuracy=0.9")) == 0
    assert "src.tracking.history INFO: epoch 1: valid_accuracy=0.9" in capsys.readouterr().err
