"""python -m src.train end to end: the run folder, resume, flag combinations, bad input, old run folders."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from src.tracking.rundir import checkpoints
from src.train import main
from src.training.checkpoints import read_checkpoint
from tests.helpers import TINY, epoch_checkpoint


def test_dry_run_writes_no_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRY_RUN", "1")
    assert main(["--arch", "effnet-b0"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_tiny_run_writes_run_folder_and_resumes(tmp_path):
    out = tmp_path / "experiments"
    flags = ["--arch", "effnet-b0", "--output-dir", str(out), "--run-name", "tiny", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    run_dir = out / "tiny"
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "history.csv", "classes.json", epoch_checkpoint(run_dir, 1).name} <= names
    assert any(n.startswith("best_model_1_valid_accuracy=") for n in names)
    assert any(n.startswith("events.out.tfevents") for n in names)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    model = config["model"]  # one mapping per group
    assert model["in_chans"] == 1 and model["num_classes"] == 10 and model["arch"] == "effnet-b0"
    assert config["run"]["run_name"] is None and config["run"]["resume"] is None  # repeatable into a new folder
    assert len(config["loader"]["mean"]) == 1 and isinstance(config["loader"]["mean"][0], float)  # the train fold's

    assert main(["--resume", str(run_dir), "--epochs", "2"]) == 0
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert int(rows[1]["iteration"]) == 2 * int(rows[0]["iteration"])
    assert {"train_eval_accuracy", "valid_accuracy", "train_eval_loss", "valid_loss", "lr"} <= set(rows[0])
    assert [p.name for p in checkpoints(run_dir)] == [epoch_checkpoint(run_dir, e).name for e in (2, 1)]  # two newest


def test_acceptance_flag_combination_runs(tmp_path):
    flags = [
        "--arch",
        "effnet-b0",
        "--accumulation-steps",
        "4",
        "--mixup-alpha",
        "0.4",
        "--mixup-k",
        "3",
        "--activation",
        "mish",
        "--epochs",
        "1",
        "--clip-grad-norm",
        "1.0",
        "--scheduler",
        "cosine",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "combo",
        *TINY,
    ]
    assert main(flags) == 0
    state = read_checkpoint([epoch_checkpoint(tmp_path / "combo", 1)])[1]
    assert {"model", "optimizer", "lr_scheduler", "trainer", "mixup", "early_stopping"} <= set(state)
    steps = {s["step"].item() for s in state["optimizer"]["state"].values()}
    assert steps == {state["trainer"]["iteration"] // 4}  # one optimizer step per 4 micro-batches


def test_ema_run_selects_by_the_ema_model_and_resumes_its_state(tmp_path):
    flags = ["--ema", "0.9", "--accumulation-steps", "2", "--output-dir", str(tmp_path), "--run-name", "ema", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    run_dir = tmp_path / "ema"
    best = list(run_dir.glob("best_model_1_valid_ema_accuracy=*.pt"))
    assert len(best) == 1
    first = read_checkpoint([epoch_checkpoint(run_dir, 1)])[1]
    assert {"ema_model", "ema_momentum_scheduler"} <= set(first)
    assert torch.load(best[0], weights_only=True).keys() == first["ema_model"].keys()
    assert first["ema_momentum_scheduler"]["event_index"] == first["trainer"]["iteration"] // 2  # per optimizer step

    assert main(["--resume", str(run_dir), "--epochs", "2"]) == 0
    second = read_checkpoint([epoch_checkpoint(run_dir, 2)])[1]
    assert second["ema_momentum_scheduler"]["event_index"] == second["trainer"]["iteration"] // 2  # counted on
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "valid_ema_accuracy" in rows[0]


@pytest.mark.parametrize(
    "extra", [["--ema", "0.9"], pytest.param(["--swa-start-epoch", "1"], marks=pytest.mark.slow)]  # SWA: toolbox's
)
def test_an_extra_evaluator_does_not_change_the_training_run(tmp_path, extra):
    """Evaluation must not draw from the training RNG: with --ema or SWA (a third evaluator; SWA also
    recomputes BatchNorm statistics) the trained model's weights after two epochs (dropout and drop-path
    active) are the same as without."""
    flags = ["--epochs", "2", "--output-dir", str(tmp_path), *TINY]
    assert main([*flags, "--run-name", "plain"]) == 0
    assert main([*flags, "--run-name", "extra", *extra]) == 0
    plain = read_checkpoint([epoch_checkpoint(tmp_path / "plain", 2)])[1]["model"]
    other = read_checkpoint([epoch_checkpoint(tmp_path / "extra", 2)])[1]["model"]
    assert all(torch.equal(plain[k], other[k]) for k in plain)


def test_a_folder_that_is_not_a_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "checkpoint_3.pt").write_bytes(b"precious")
    assert main(["--output-dir", str(tmp_path), "--run-name", "taken", *TINY]) == 2
    assert f"error: {tmp_path / 'taken'}: no config.yaml; is it a run folder of src.train?" in capsys.readouterr().err
    assert (tmp_path / "taken" / "checkpoint_3.pt").read_bytes() == b"precious"


def test_unknown_arch_exits_non_zero_with_the_known_names():
    result = subprocess.run(
        [sys.executable, "-m", "src.train", "--arch", "nope"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        "unknown arch 'nope'" in result.stderr
        and "effnet-b0" in result.stderr
        and "se_resnext50_32x4d" in result.stderr
    )


@pytest.mark.parametrize("flags,expected", [(["--fold", "7"], "--fold 7"), (["--resume", "nowhere"], "nowhere")])
def test_bad_input_gets_a_clear_message(flags, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(flags) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.slow
def test_default_recipe_learns_the_digits(tmp_path):
    """Three epochs of the default recipe on the full bundled digits (about 80 s on 2 cores)."""
    flags = ["--output-dir", str(tmp_path), "--run-name", "slow", "--epochs", "3", "--no-progress"]
    assert main(flags) == 0
    with (tmp_path / "slow" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["valid_accuracy"]) > 0.9


@pytest.mark.slow  # 15 s warm, much longer with a cold inductor cache (a fresh CI machine)
def test_compile_trains_the_compiled_model_and_saves_the_plain_one(tmp_path, monkeypatch):
    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):  # the eager backend checks the wiring in seconds (inductor: minutes on CPU)
        calls.append((type(model).__name__, kwargs))
        return real_compile(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    assert main(["--compile", "--epochs", "1", "--output-dir", str(tmp_path), "--run-name", "c", *TINY]) == 0
    assert calls == [("Classifier", {"dynamic": False})]  # the training model once; the evaluators run eagerly
    state = read_checkpoint([epoch_checkpoint(tmp_path / "c", 1)])[1]["model"]
    assert not any(key.startswith("_orig_mod") for key in state)


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative run folder, as users give it
    assert main(["--epochs", "1", "--output-dir", "exp", "--run-name", "done", *TINY]) == 0
    saved = epoch_checkpoint(tmp_path / "exp" / "done", 1)
    before = saved.read_bytes()
    (tmp_path / "exp" / "done" / "valid_predictions.csv").unlink()
    assert main(["--resume", "exp/done"]) == 0  # --epochs 1 from the saved config: nothing to train
    assert saved.read_bytes() == before  # not trained again from epoch 0
    assert (tmp_path / "exp" / "done" / "valid_predictions.csv").is_file()  # the outputs are written again
    assert checkpoints(tmp_path / "exp" / "done") == [saved]


def test_arch_and_data_must_agree(capsys):
    assert main(["--arch", "gru", "--dry-run", "--no-progress"]) == 2  # the bundled digits are images
    assert "--arch gru reads QuickDraw strokes" in capsys.readouterr().err


def _as_main_wrote_it_before_the_groups(config: dict) -> dict:
    """A grouped config.yaml in the flat form main wrote before the groups: comma strings, text normalisation."""
    flat = {name: value for group in config.values() for name, value in group.items()}
    for name in ("label_col", "channels", "classes", "head_weights"):
        if flat[name] is not None:
            flat[name] = ",".join(map(str, flat[name]))
    for name in ("mean", "std"):
        flat[name] = ",".join(f"{v:.6f}" for v in flat[name])
    return flat


def test_a_run_folder_with_a_flat_config_resumes(tmp_path):
    run_dir = tmp_path / "old"
    assert main(["--output-dir", str(tmp_path), "--run-name", "old", "--epochs", "1", *TINY]) == 0
    grouped = yaml.safe_load((run_dir / "config.yaml").read_text())
    flat = _as_main_wrote_it_before_the_groups(grouped)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(flat))
    assert main(["--resume", str(run_dir), "--epochs", "2"]) == 0
    with (run_dir / "history.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == flat  # a resume never rewrites config.yaml
