"""Long runs and interruptions, end to end: a run stopped inside an epoch (each signal, the time limit) and
continued by the same command ends with the history and weights of a run that was never stopped."""

import signal

import pandas as pd
import pytest
import torch

from src.tracking.history import TIME_COLUMNS
from src.train import main
from src.training.stopping import TIME_LIMIT_EXIT, StopRequests
from tests.helpers import TINY, signal_at

# 5 iterations per epoch and windows of 2: the epoch's end falls inside a window (its gradients are saved too);
# mixup and effnet's dropout draw from their generators at every step.
FLAGS = ["--arch", "effnet-b0", *TINY, "--epochs", "2", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]


def _history(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns=list(TIME_COLUMNS))


def _weights(run_dir):
    return torch.load(run_dir / "checkpoint_10.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``uninterrupted(workers)``: the flags and run folder of the run never stopped, with that many loader
    workers (trained once per worker count)."""
    runs = {}

    def run(workers: int = 0):
        if workers not in runs:
            out = tmp_path_factory.mktemp(f"workers{workers}")
            flags = [*FLAGS, "--num-workers", str(workers), "--output-dir", str(out)]
            assert main([*flags, "--run-name", "full"]) == 0
            runs[workers] = flags, out / "full"
        return runs[workers]

    return run


@pytest.mark.parametrize(
    "signum, iteration, workers, stopped_at",
    [
        (signal.SIGTERM, 7, 0, 8),  # inside epoch 2: the next optimizer step saves and stops
        (signal.SIGINT, 7, 2, 8),  # Ctrl-C, with worker processes
        (signal.SIGUSR1, 5, 0, 5),  # the epoch's last iteration: stops after its validation, inside a window
    ],
)
def test_a_run_stopped_by_a_signal_continues_to_the_same_numbers(
    uninterrupted, monkeypatch, capsys, signum, iteration, workers, stopped_at
):
    flags, full = uninterrupted(workers)
    name = signal.Signals(signum).name
    with monkeypatch.context() as patch:
        signal_at(patch, iteration, signum)
        assert main([*flags, "--run-name", name]) == 128 + signum
    err = capsys.readouterr().err
    cut = full.parent / name
    assert f"stopped by {name}; the training state of {cut} at" in err
    assert f"iteration {stopped_at} is saved; continue with: python -m src.train " in err
    assert err.rstrip().endswith(f"--run-name {name}")
    assert not (cut / "summary.json").exists()
    assert f"checkpoint_{stopped_at}.pt" in {p.name for p in cut.iterdir()}

    assert main([*flags, "--run-name", name]) == 0  # the same command continues
    pd.testing.assert_frame_equal(_history(cut), _history(full))
    expected, resumed = _weights(full), _weights(cut)
    assert expected.keys() == resumed.keys() and all(torch.equal(v, resumed[k]) for k, v in expected.items())


def test_the_time_limit_stops_and_the_same_command_without_it_finishes(uninterrupted, capsys):
    flags, full = uninterrupted()
    assert main([*flags, "--run-name", "limited", "--time-limit", "1s"]) == TIME_LIMIT_EXIT
    assert "stopped by the time limit 1s; the training state of" in capsys.readouterr().err
    assert main([*flags, "--run-name", "limited"]) == 0
    pd.testing.assert_frame_equal(_history(full.parent / "limited"), _history(full))


def test_the_same_command_twice_gives_the_same_history(uninterrupted):
    flags, full = uninterrupted()
    assert main([*flags, "--run-name", "again"]) == 0
    pd.testing.assert_frame_equal(_history(full.parent / "again"), _history(full))


def test_the_same_run_name_with_other_settings_is_refused(uninterrupted, capsys):
    flags, full = uninterrupted()
    before = (full / "checkpoint_10.pt").read_bytes()
    assert main([*flags, "--run-name", "full", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"error: run folder {full} holds a run with other settings (lr: 0.004 there, 0.5 here)" in err
    assert (full / "checkpoint_10.pt").read_bytes() == before
    assert main([*flags, "--run-name", "full"]) == 0  # finished: nothing to train, the summary again
    assert (full / "checkpoint_10.pt").read_bytes() == before


def test_the_time_margin_covers_the_longest_interval():
    now = [0.0]
    requests = StopRequests(time_limit_s=100, label="100s", clock=lambda: now[0])
    requests.longest_interval = 10.0  # e.g. an epoch's end with its validation and save
    now[0] = 83.9
    assert requests.code() == 0
    now[0] = 84.0  # 84 + 1.5 x 10 + 1 >= 100
    assert requests.code() == -1
    assert requests.stopped(-1).exit_code == TIME_LIMIT_EXIT
    requests.signal = signal.SIGTERM
    assert requests.code() == signal.SIGTERM and requests.stopped(requests.code()).exit_code == 143


def test_fold_all_stops_before_a_fold_or_inside_one_and_the_same_command_finishes(tmp_path, capsys, monkeypatch):
    flags = ["--arch", "effnet-b0", *TINY, "--epochs", "2", "--folds", "2", "--fold", "all"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "cv"]
    assert main([*flags, "--time-limit", "1s"]) == TIME_LIMIT_EXIT  # 1 s is within the margin: before fold 0
    assert "stopped by the time limit 1s; continue with: python -m src.train" in capsys.readouterr().err
    assert not (tmp_path / "cv" / "fold0").exists()
    with monkeypatch.context() as patch:
        signal_at(patch, 4, signal.SIGTERM)  # 3 iterations per epoch here
        assert main(flags) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert f"the training state of {tmp_path / 'cv' / 'fold0'} at epoch 2, iteration 4 is saved" in err
    assert err.rstrip().endswith("--output-dir " + str(tmp_path) + " --run-name cv")  # names the run already
    assert main(flags) == 0
    assert len(pd.read_csv(tmp_path / "cv" / "oof.csv")) == sum(
        len(pd.read_csv(tmp_path / "cv" / f"fold{k}" / "valid_predictions.csv")) for k in (0, 1)
    )


def test_a_stop_between_folds_names_the_run():
    requests = StopRequests()
    requests.check_between()  # nothing asked: goes on
    requests.signal = signal.SIGUSR1
    with pytest.raises(Exception, match="SIGUSR1") as stopped:
        requests.check_between()
    assert stopped.value.exit_code == 128 + signal.SIGUSR1 and "run the same command again" in stopped.value.message()
