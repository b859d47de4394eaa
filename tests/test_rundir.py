"""The run folder: finding checkpoints, the best model, fold folders, and never overwriting a run."""

import pytest
import torch

from src.config import FOLDER_FIELDS, RESUMABLE, Config, deferred_checks
from src.tracking import rundir
from src.tracking.rundir import best_checkpoint, find_checkpoint, fold_dirs


def test_find_checkpoint_picks_the_newest_epoch(tmp_path):
    for epoch in (2, 10, 9):
        torch.save({}, tmp_path / f"checkpoint_{epoch}.pt")
    assert find_checkpoint(str(tmp_path)).name == "checkpoint_10.pt"


def test_find_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_checkpoint(str(tmp_path))


def test_best_checkpoint_has_the_highest_score_and_lower_is_better_scores_are_negated(tmp_path):
    for name in ("best_model_3_valid_accuracy=0.9100.pt", "best_model_5_valid_accuracy=0.9300.pt"):
        torch.save({}, tmp_path / name)
    assert best_checkpoint(tmp_path).name == "best_model_5_valid_accuracy=0.9300.pt"
    losses = tmp_path / "loss"
    losses.mkdir()
    for name in ("best_model_2_valid_log_loss=-0.3000.pt", "best_model_4_valid_log_loss=-0.2000.pt"):
        torch.save({}, losses / name)
    assert best_checkpoint(losses).name == "best_model_4_valid_log_loss=-0.2000.pt"  # the lower loss
    with pytest.raises(FileNotFoundError, match="no best_model"):
        best_checkpoint(tmp_path / "loss" / "nowhere")


def test_fold_folders_in_fold_order_or_the_run_itself(tmp_path):
    for k in (10, 2, 0):
        (tmp_path / f"fold{k}").mkdir()
    assert [p.name for p in fold_dirs(tmp_path)] == ["fold0", "fold2", "fold10"]
    assert fold_dirs(tmp_path / "fold0") == [tmp_path / "fold0"]


def test_start_saves_the_config_without_its_folder_and_a_trained_folder_goes_on_only_with_its_settings(tmp_path):
    config = Config.of(output_dir=str(tmp_path), run_name="r", arch="resnet18", in_chans=1)
    run_dir = rundir.locate(config)
    assert run_dir == tmp_path / "r" and not rundir.is_run(run_dir)
    rundir.start(run_dir, config)
    saved = rundir.read_config(run_dir)
    assert saved.model.arch == "resnet18" and saved.run.run_name is None and saved.run.resume is None
    torch.save({}, run_dir / "checkpoint_1.pt")
    assert rundir.is_run(run_dir) and rundir.locate(config.replace(epochs=30)) == run_dir
    changes = rundir.check_continuation(run_dir, config.replace(epochs=30, device="cpu"))
    assert changes == ["epochs 18 -> 30", "device 'auto' -> 'cpu'"]  # run control: named, allowed
    with pytest.raises(
        ValueError, match=r"holds a run with other settings \(arch: 'resnet18' there, 'resnet34' here\)"
    ):
        rundir.check_continuation(run_dir, config.replace(arch="resnet34"))
    with pytest.raises(ValueError, match=r"--resume .*: the run cannot go on with other settings \(lr 0.004 -> 0.1\)"):
        rundir.check_continuation(run_dir, config.replace(lr=0.1, resume=str(run_dir)))
    assert rundir.locate(config.replace(dry_run=True)) is None


def test_restart_moves_the_earlier_run_aside_and_deletes_nothing(tmp_path):
    config = Config.of(output_dir=str(tmp_path), run_name="r", in_chans=1)
    run_dir = rundir.locate(config)
    rundir.start(run_dir, config)
    (run_dir / "checkpoint_5.pt").write_bytes(b"weights")
    rundir.start(run_dir, config.replace(restart=True, lr=0.1))
    (aside,) = tmp_path.glob("r.before-restart-*")
    assert (aside / "checkpoint_5.pt").read_bytes() == b"weights" and rundir.read_config(aside).optim.lr == 0.004
    assert rundir.read_config(run_dir).optim.lr == 0.1 and rundir.read_config(run_dir).run.restart is False
    assert not rundir.has_checkpoint(run_dir)


def test_resume_auto_finds_the_newest_unfinished_run_with_the_same_settings(tmp_path):
    config = Config.of(output_dir=str(tmp_path), arch="resnet18", in_chans=1, resume="auto")
    for name, arch, finished in (("old", "resnet18", False), ("done", "resnet18", True), ("other", "resnet34", False)):
        run_dir = tmp_path / name
        rundir.start(run_dir, config.replace(run_name=name, arch=arch, resume=None))
        torch.save({}, run_dir / "checkpoint_5.pt")
        if finished:
            rundir.write_summary(run_dir, {})
    assert rundir.continuable(config) == tmp_path / "old"
    assert rundir.locate(config) == tmp_path / "old"
    assert rundir.continuable(config.replace(lr=0.1)) is None  # nothing to continue: a new run


def test_a_continued_run_may_change_exactly_the_fields_declared_to_allow_it(tmp_path):
    config = Config.of(output_dir=str(tmp_path), run_name="r", num_classes=3, in_chans=1, meta_features=2)
    config = config.replace(mean="0.5", std="0.25")  # every inferred field resolved: compared
    run_dir = rundir.locate(config)
    rundir.start(run_dir, config)
    for name, value in config.flat().items():
        with deferred_checks():  # any value: the rule is by field, whatever its type
            other = config.replace(**{name: "changed"})
        if name in FOLDER_FIELDS:
            assert rundir.check_continuation(run_dir, other) == [], name
        elif name in RESUMABLE:  # e.g. a tracking flag: named, allowed
            assert rundir.check_continuation(run_dir, other) == [f"{name} {value!r} -> 'changed'"], name
        else:
            with pytest.raises(ValueError, match=rf"other settings \({name}: "):
                rundir.check_continuation(run_dir, other)


def test_the_settings_of_an_experiment_leave_out_how_it_runs_and_what_the_data_decides():
    config = Config.of(epochs=3, lr=0.1, device="cpu", notes=False, mlflow_experiment="x", in_chans=1, mean="0.5")
    assert rundir.changed_settings(config) == {"epochs": 3, "lr": 0.1}
