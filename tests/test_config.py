import json

import pytest
import yaml

from src.config import Config, load_config_file, parse_config, save_config


def test_defaults_and_flags():
    config = parse_config(["--arch", "densenet121", "--accumulation-steps", "4", "--mixup-alpha", "0.4"], environ={})
    assert config.arch == "densenet121" and config.accumulation_steps == 4 and config.mixup_alpha == 0.4
    assert config.folds == 5 and config.fold == 0 and not config.dry_run


def test_dry_run_from_environment():
    assert parse_config([], environ={"DRY_RUN": "1"}).dry_run
    assert not parse_config([], environ={"DRY_RUN": "0"}).dry_run


def test_config_file_then_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("arch: effnet-b1\nlr: 0.01\nepochs: 3\n")
    config = parse_config(["--config", str(path), "--lr", "0.02"], environ={})
    assert (config.arch, config.lr, config.epochs) == ("effnet-b1", 0.02, 3)
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"batch_size": 16}))
    assert parse_config(["--config", str(json_path)], environ={}).batch_size == 16


def test_saved_config_round_trips(tmp_path):
    config = Config(arch="effnet-b2", mixup_alpha=0.2, clip_grad_norm=1.0, in_chans=1)
    save_config(config, tmp_path / "config.yaml")
    assert load_config_file(tmp_path / "config.yaml") == config


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("arch: effnet-b0\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config_file(path)


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
    assert {k: getattr(config, k) for k in values} == values and config.lr == 1e-3
    path.write_text(yaml.safe_dump({**values, "metric": "map3"}))
    with pytest.raises(ValueError, match="--metric 'map3'"):
        parse_config(["--config", str(path)], environ={})
