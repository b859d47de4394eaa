"""Sweeps (issue 32): a bad space is one line before any trial; two workers on one journal file run each of the
study's trials once, the report names the best and its best.yaml trains; the pruner stops a trial whose learning
rate cannot learn; a worker killed mid-trial leaves a trial that the next worker marks failed and retries once,
continuing its run folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.config import Config
from src.train import main as train_main
from src.tuning.space import check_space
from src.tuning.study import RETRY_ATTR, RUN_ATTR, counted
from tests.helpers import class_images

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_integration")

from src import sweep  # noqa: E402 - after the optional packages are found

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--arch", "resnet18", "--img-size", "16", "--folds", "3", "--batch-size", "16", "--train-eval-size", "16",
         "--no-progress", "--no-pictures", "--split-seed", "0"]
SPACE = "lr: {log_uniform: [1.0e-3, 3.0e-2]}\nlabel_smoothing: {uniform: [0.0, 0.2]}\n"


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> list[str]:
    """An easy task (the class is where the bright square is): its data flags."""
    from src.tools.export_digits import write_image_folder

    root = tmp_path_factory.mktemp("quadrants")
    images, labels = class_images(96, 3, seed=3)
    csv = write_image_folder(images, [f"c{v}" for v in labels], root)
    return ["--train-csv", str(csv), "--image-dir", str(root / "train")]


def _space(tmp_path, text=SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ("lrr: {log_uniform: [1.0e-4, 1.0e-2]}\n", "lrr: not a trainer flag; did you mean lr?"),
    ("epochs: {uniform: [2, 6]}\n", "epochs: uniform: the flag takes an integer, not a float range"),
    ("lr: {log_uniform: [1.0e-2, 1.0e-2]}\n", "lr: log_uniform: an empty range"),
    ("lr: {log_uniform: [0, 1.0e-2]}\n", "a log range needs low > 0"),
    ("mixup_alpha: {normal: [0, 1]}\n", "mixup_alpha: expected one distribution of uniform"),
    ("label_smoothing: {uniform: [0.0, 1.5]}\n", "1.5 is refused by the trainer: --label-smoothing 1.5"),
    ("fold: {int: [0, 2]}\n", "fold: the folds are fixed for every trial"),
    ("num_workers: {int: [0, 2]}\n", "num_workers: not a setting of what a run learns"),
    ("- lr\n", "expected a mapping of flags to distributions"),
    ("lr: {uniform: [1.0e-3, 1.0e-2]}\n--lr: {uniform: [1.0e-3, 2.0e-2]}\n", "--lr: the flag lr is given twice"),
    ("lr: {uniform: [1.0e-3, fast]}\n", "lr: uniform: expected [low, high], two numbers"),
])
def test_a_bad_space_is_one_line_before_any_trial(tmp_path, capsys, competition, text, expected):
    out = tmp_path / "experiments"
    code = sweep.main(["--space", str(_space(tmp_path, text)), "--trials", "2", *competition, *FLAGS,
                       "--output-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert expected in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # no storage, no run folder


def test_a_bad_sweep_flag_is_one_line(tmp_path, capsys, competition):
    for flags, expected in ([["--trials", "0"], "--trials 0: expected an integer >= 1"],
                            [["--time-limit", "1h"], "--time-limit: the sweep names, starts and times its trials"],
                            [["--pruner", "sometimes"], "--pruner"],
                            [["--time-budget", "soon"], "--time-budget 'soon'"],
                            [["--train-csv", str(tmp_path / "typo.csv")], "typo.csv"]):  # the data, read first
        assert sweep.main(["--space", str(_space(tmp_path)), *competition, *FLAGS, *flags,
                           "--output-dir", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_without_optuna_a_sweep_is_one_line(tmp_path, capsys, monkeypatch, competition):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    argv = ["--space", str(_space(tmp_path)), *competition, *FLAGS, "--output-dir", str(tmp_path / "x")]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: sweeps need optuna and optuna-integration (optuna is missing): pip install optuna " \
                  "optuna-integration"
    assert not (tmp_path / "x").exists()


def test_a_worker_with_other_fixed_flags_is_refused(tmp_path, capsys, competition):
    storage = tmp_path / "s.journal"
    base = sweep.parse_config([*competition, *FLAGS, "--epochs", "1", "--output-dir", str(tmp_path), "--no-notes"])
    sweep.run({"lr": {"uniform": [1e-3, 1e-2]}}, base, trials=1, storage=str(storage), study="one", pruner="none")
    again = sweep.run({"lr": {"uniform": (1e-3, 1e-2)}}, base, trials=1, storage=str(storage), study="one")
    assert len(again.get_trials()) == 1  # the same settings (a tuple as the storage's list): no trial more to run
    before = storage.read_bytes()
    argv = ["--space", str(_space(tmp_path, "lr: {uniform: [1.0e-3, 1.0e-2]}\n")), "--trials", "1", "--study", "one",
            "--storage", str(storage), *competition, *FLAGS, "--epochs", "2", "--output-dir", str(tmp_path)]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--study one: started with experiment" in err and "every worker runs the same command" in err, err
    assert storage.read_bytes() == before


def test_a_report_of_no_study_is_one_line(tmp_path, capsys):
    assert sweep.main(["report", "--study", "none", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --storage {tmp_path / 'sweeps' / 'none.journal'}: no such file"), err
    assert list(tmp_path.iterdir()) == []


def test_space_values_are_typed_as_their_fields(tmp_path):
    space = sweep.load_space(_space(tmp_path, "epochs: {int: [2, 5]}\naug: {choice: [none, light]}\n"
                                              "--mixup-alpha: {uniform: [0, 1]}\nlr: {log_uniform: [1e-4, 1e-2]}\n"))
    params = check_space(space, Config())
    assert [(p.name, p.kind, p.values) for p in params] == [
        ("epochs", "int", (2, 5)), ("aug", "choice", ("none", "light")), ("mixup_alpha", "uniform", (0.0, 1.0)),
        ("lr", "log_uniform", (1e-4, 1e-2))]  # YAML reads 1e-4 as text: taken as meant


def _worker(space: Path, storage: Path, out: Path, competition: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "src.sweep", "--space", str(space), "--trials", "4", "--storage", str(storage),
               "--study", "pair", "--pruner", "none", *competition, *FLAGS, "--epochs", "2", "--output-dir", str(out),
               "--no-notes"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_on_one_journal_run_each_trial_once_and_the_best_trains(tmp_path, capsys, competition):
    space, storage, out = _space(tmp_path), tmp_path / "pair.journal", tmp_path / "experiments"
    workers = [_worker(space, storage, out, competition) for _ in range(2)]
    logs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], logs

    study = optuna.load_study(study_name="pair", storage=sweep.storage(str(storage), storage))
    trials = counted(study.get_trials())  # a fifth, started by both workers at once, is dropped before it trains
    assert len(trials) == 4 and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    runs = sorted(t.user_attrs[RUN_ATTR] for t in trials)
    assert sorted(p.name for p in out.iterdir() if (p / "config.yaml").exists()) == runs
    assert sum(log.count("finished with value") for log in logs) == 4  # each trial trained once, by one worker
    for name in runs:
        assert json.loads((out / name / "status.json").read_text())["status"] == "finished"
        assert len((out / name / "history.csv").read_text().splitlines()) == 1 + 2  # two epochs, once

    capsys.readouterr()
    report = tmp_path / "report"
    assert sweep.main(["report", "--study", "pair", "--storage", str(storage), "--out", str(report)]) == 0
    printed = capsys.readouterr().out
    best = study.best_trial
    assert f"best: trial {best.number}, {best.value} ({best.user_attrs[RUN_ATTR]})" in printed
    assert {"trials.csv", "best.yaml", "history.png"} <= {p.name for p in report.iterdir()}
    best_yaml = (report / "best.yaml").read_text()
    assert f"lr: {best.params['lr']}" in best_yaml and "split_seed: 0" in best_yaml
    argv = ["--config", str(report / "best.yaml"), "--fold", "0", "--epochs", "1", "--output-dir", str(tmp_path),
            "--run-name", "from-best", "--no-notes"]
    assert train_main(argv) == 0
    saved = (tmp_path / "from-best" / "config.yaml").read_text()
    assert f"lr: {best.params['lr']}" in saved


def test_the_pruner_stops_a_trial_whose_learning_rate_cannot_learn(tmp_path, competition):
    base = sweep.parse_config([*competition, *FLAGS, "--epochs", "4", "--output-dir", str(tmp_path), "--no-notes"])
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"  # a database storage (the other tests: journal files)
    study = sweep.run({"lr": {"choice": [0.01, 1.0e-12]}}, base, trials=2, study="hopeless", storage=storage,
                      enqueue=[{"lr": 0.01}, {"lr": 1.0e-12}], pruner="median", pruner_startup_trials=1,
                      pruner_warmup_epochs=0)
    learns, hopeless = study.get_trials()
    assert learns.state == optuna.trial.TrialState.COMPLETE and learns.value > 0.6
    assert hopeless.state == optuna.trial.TrialState.PRUNED and hopeless.params == {"lr": 1.0e-12}
    status = json.loads((tmp_path / "hopeless-t001" / "status.json").read_text())
    assert status["status"] == "pruned"
    epochs = len((tmp_path / "hopeless-t001" / "history.csv").read_text().splitlines()) - 1
    assert 1 <= epochs < 4


def test_a_killed_worker_s_trial_is_retried_once_from_its_checkpoint(tmp_path, competition):
    space, storage, out = _space(tmp_path), tmp_path / "kill.journal", tmp_path / "experiments"
    flags = [*competition, *FLAGS, "--epochs", "8", "--output-dir", str(out), "--no-notes"]
    command = [sys.executable, "-m", "src.sweep", "--space", str(space), "--trials", "1", "--storage", str(storage),
               "--study", "kill", "--pruner", "none", *flags]
    worker = subprocess.Popen(command, cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "kill-t000" / "history.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not history.is_file() or len(history.read_text().splitlines()) < 3):
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    epochs_done = len(history.read_text().splitlines()) - 1
    assert 2 <= epochs_done < 8, "the trial was not killed in the middle"

    base = sweep.parse_config(flags)
    study = sweep.run(space, base, trials=1, storage=str(storage), study="kill", pruner="none")
    killed, retry = study.get_trials()
    assert killed.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.user_attrs[RETRY_ATTR] == 0
    assert retry.params == killed.params and retry.user_attrs[RUN_ATTR] == "kill-t000"
    rows = (out / "kill-t000" / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == [str(k) for k in range(1, 9)]  # each epoch once: it went on
    assert not (out / "kill-t001").exists()  # no second run folder: the same run went on


def _trial(number, state="COMPLETE", **attrs):
    from types import SimpleNamespace

    return SimpleNamespace(number=number, state=getattr(optuna.trial.TrialState, state), user_attrs=attrs)


def test_trials_beyond_the_count_are_surplus_and_a_retry_takes_its_original_s_place():
    from src.tuning.study import counted, is_surplus, wants_trial

    trials = [_trial(0), _trial(1, "FAIL", interrupted="SIGTERM"), _trial(2, "RUNNING"),
              _trial(3, "WAITING", retry_of=1)]
    assert [t.number for t in counted(trials)] == [0, 2, 3]  # trial 1's retry counts instead of it
    assert wants_trial(trials, 3)  # three count, but the retry waits to be run
    assert not is_surplus(trials, 3, 3)
    both = [*trials[:3], _trial(3, "RUNNING", retry_of=1), _trial(4, "RUNNING")]  # two workers at once
    assert is_surplus(both, 4, 3) and not is_surplus(both, 3, 3)
    assert not wants_trial([*both[:4], _trial(4, "FAIL", surplus=True)], 3)


def test_the_time_budget_stops_the_running_trial_and_starts_no_other(tmp_path, competition):
    base = sweep.parse_config([*competition, *FLAGS, "--epochs", "200", "--output-dir", str(tmp_path), "--no-notes"])
    storage = str(tmp_path / "clock.journal")
    study = sweep.run({"lr": {"uniform": [1e-3, 1e-2]}}, base, trials=2, study="clock", storage=storage,
                      pruner="none", time_budget="6s")
    (stopped,) = study.get_trials()  # the second trial never started
    assert stopped.state == optuna.trial.TrialState.FAIL and "time limit" in stopped.user_attrs["interrupted"]
    status = json.loads((tmp_path / "clock-t000" / "status.json").read_text())
    assert status["status"] == "stopped" and "the time limit" in status["detail"]


def test_sweep_folds_scores_a_trial_by_the_oof_of_its_first_folds(tmp_path, competition):
    base = sweep.parse_config([*competition, *FLAGS, "--epochs", "1", "--output-dir", str(tmp_path), "--no-notes"])
    study = sweep.run({"lr": {"uniform": [1e-3, 1e-2]}}, base, trials=1, study="cv", sweep_folds=2, pruner="none")
    (trial,) = study.get_trials()
    run = tmp_path / "cv-t000"
    cv = json.loads((run / "cv_summary.json").read_text())
    assert cv["folds"] == [0, 1] and trial.value == cv["oof_score"]
    assert sorted(p.name for p in run.glob("fold*")) == ["fold0", "fold1"]  # the third fold never trained


def test_a_trial_is_interrupted_when_its_worker_is_gone_even_if_its_number_came_back():
    import socket

    from src.tuning.study import interrupted
    from src.utils.processes import start_time

    here, me = socket.gethostname(), os.getpid()

    def running(**worker):
        return _trial(0, "RUNNING", run_name="s-t000", worker={"host": here} | worker)

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert interrupted(running(pid=dead.pid))
    assert interrupted(running(pid=me, started=start_time(me)))  # this worker runs no trial while it looks
    assert interrupted(running(pid=os.getppid(), started=-1))  # the number is another process's now
    assert not interrupted(running(pid=os.getppid(), started=start_time(os.getppid())))
    assert not interrupted(_trial(0, "RUNNING", run_name="s-t000", worker={"host": "elsewhere", "pid": dead.pid}))


def test_a_trial_retried_by_two_workers_at_once_runs_once():
    from src.tuning.study import is_second_retry

    trials = [_trial(0, "FAIL", interrupted="SIGTERM", run_name="s-t000"), _trial(1),
              _trial(2, "WAITING", retry_of=0), _trial(3, "WAITING", retry_of=0)]
    assert [t.number for t in counted(trials)] == [1, 2]
    assert is_second_retry(trials, trials[3]) and not is_second_retry(trials, trials[2])


def test_no_trial_starts_that_the_median_trial_says_would_not_end_in_the_budget():
    objective = sweep.Objective([], Config(), [], sweep.SweepConfig(space="space", time_budget="100s"))
    assert objective.has_time()  # the first trial always starts
    objective.durations = [30.0, 200.0, 40.0]  # median 40 s
    objective.deadline = time.monotonic() + 60
    assert objective.has_time()
    objective.deadline = time.monotonic() + 35
    assert not objective.has_time()



def test_hyperband_prunes_trials_in_its_brackets(tmp_path, competition):
    base = sweep.parse_config([*competition, *FLAGS, "--epochs", "4", "--output-dir", str(tmp_path), "--no-notes"])
    study = sweep.run({"lr": {"choice": [0.01, 1.0e-12]}}, base, trials=4, study="hb", pruner="hyperband",
                      enqueue=[{"lr": 0.01}, {"lr": 0.01}, {"lr": 1.0e-12}, {"lr": 1.0e-12}])
    states = [t.state.name for t in study.get_trials()]
    assert states[0] == "COMPLETE" and "PRUNED" in states and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert study.best_trial.params == {"lr": 0.01}
