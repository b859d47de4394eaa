"""The training side of "a refused command changes nothing" (issue 28): ``src.train`` (one fold, ``--resume``,
``--fold all``) and ``src.lr_find`` check everything before their first write. Each refused case is answered with
one ``error:`` line and exit code 2, no traceback, and the folder of the runs byte-identical
(`tests.helpers.assert_refused`): a changed setting, a damaged run folder, a value of the wrong type, a mistyped
flag. Then what a run that goes on does: it names the settings it changes, rewrites nothing it wrote before,
removes the temporary files of its interrupted writes, keeps a finished run's status unless it finishes again,
and logs its notes entry beside its folder.

One tiny finished run (``run``) and one ``--fold all`` run (``cv``) are trained once; each case works on a copy
whose weights are hard links (a damaged file is replaced, never written through the link).
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from src.lr_find import main as lr_find_main
from src.train import continue_command
from src.train import main as train_main
from src.utils import files
from tests.helpers import TINY, assert_refused, fingerprint

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [*TINY, "--epochs", "1", "--no-pictures"]
MAINS = {"train": train_main, "lr_find": lr_find_main}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder with ``run`` (effnet-b0, one fold, one epoch, finished) and ``cv`` (two folds of one epoch)."""
    root = tmp_path_factory.mktemp("trained")
    assert train_main([*FLAGS, "--output-dir", str(root), "--run-name", "run"]) == 0
    assert train_main([*FLAGS, "--folds", "2", "--fold", "all", "--output-dir", str(root), "--run-name", "cv"]) == 0
    return root


def _copy(trained: Path, name: str, to: Path) -> Path:
    """``trained/name`` copied into ``to``, its ``.pt`` files as hard links (fast; never written through)."""

    def link_weights(source: str, target: str) -> None:
        os.link(source, target) if source.endswith(".pt") else shutil.copy2(source, target)

    return Path(shutil.copytree(trained / name, to / name, copy_function=link_weights))


def _replace(path: Path, data: bytes) -> None:
    """Writes ``data`` as a new file at ``path`` (unlinking it first: it may be a hard link to the shared run)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _cut_config(run: Path, keep: float) -> None:
    lines = (run / "config.yaml").read_text().splitlines(keepends=True)
    _replace(run / "config.yaml", "".join(lines[: int(len(lines) * keep)]).encode())


def _set_config(run: Path, group: str, key: str, value) -> None:
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved[group][key] = value
    _replace(run / "config.yaml", yaml.safe_dump(saved, sort_keys=False).encode())


def _cut_history(run: Path) -> None:
    _replace(run / "history.csv", (run / "history.csv").read_bytes()[:-25])  # in the middle of the last row


def _other_split(run: Path) -> None:
    lines = (run / "folds.csv").read_text().splitlines(keepends=True)
    row_id, fold = lines[1].rstrip("\r\n").split(",")
    lines[1] = f"{row_id},{1 - int(fold) if fold in '01' else 0}\n"
    _replace(run / "folds.csv", "".join(lines).encode())


def _corrupt_checkpoints(run: Path) -> None:
    for path in run.glob("checkpoint_*.pt"):
        _replace(path, path.read_bytes()[:1000])  # truncated, as by a full disk


DAMAGE = {
    "none": lambda tmp: None,
    "cut config": lambda tmp: _cut_config(tmp / "run", 1 / 3),
    "config not YAML": lambda tmp: _replace(tmp / "run" / "config.yaml", b"model:\n  arch: [effnet-b0\n"),
    "config without its last line": lambda tmp: _cut_config(tmp / "run", 0.999),
    "config lr text": lambda tmp: _set_config(tmp / "run", "optim", "lr", "fast"),
    "no config": lambda tmp: (tmp / "run" / "config.yaml").unlink(),
    "cut history": lambda tmp: _cut_history(tmp / "run"),
    "no classes": lambda tmp: (tmp / "run" / "classes.json").unlink(),
    "classes not JSON": lambda tmp: _replace(tmp / "run" / "classes.json", b'{"kind": "single", "heads": ['),
    "no folds": lambda tmp: (tmp / "run" / "folds.csv").unlink(),
    "other split": lambda tmp: _other_split(tmp / "run"),
    "corrupt checkpoints": lambda tmp: _corrupt_checkpoints(tmp / "run"),
    "cut cv config": lambda tmp: _cut_config(tmp / "cv", 1 / 3),
    "config file epochs 2.5": lambda tmp: (tmp / "bad.yaml").write_text("epochs: 2.5\n"),
    "config file lr text": lambda tmp: (tmp / "bad.yaml").write_text("optim:\n  lr: fast\n"),
}

# (name, entry point, damage, arguments, text the one error line holds); {tmp} is the folder of the copies
CASES = [
    # a resume that changes what the run is
    (
        "resume, other arch",
        "train",
        "none",
        ["--resume", "{tmp}/run", "--arch", "resnet18"],
        "--resume {tmp}/run: the run cannot go on with other settings (arch 'effnet-b0' -> 'resnet18')",
    ),
    (
        "resume, other image size",
        "train",
        "none",
        ["--resume", "{tmp}/run", "--epochs", "2", "--img-size", "48"],
        "(img_size 32 -> 48); drop those flags to continue it as it started",
    ),
    (
        "resume, other iteration cap",
        "train",
        "none",
        ["--resume", "{tmp}/run", "--epochs", "2", "--max-iters-per-epoch", "2", "--lr", "0.01"],
        "other settings (lr 0.004 -> 0.01; max_iters_per_epoch None -> 2)",
    ),
    (
        "same name, other settings",
        "train",
        "none",
        [*FLAGS, "--output-dir", "{tmp}", "--run-name", "run", "--lr", "0.1"],
        "run folder {tmp}/run holds a run with other settings (lr: 0.004 there, 0.1 here)",
    ),
    (
        "fold all, other settings",
        "train",
        "none",
        ["--resume", "{tmp}/cv", "--mixup-alpha", "0.4"],
        "--resume {tmp}/cv: the run cannot go on with other settings (mixup_alpha 0.0 -> 0.4)",
    ),
    # a damaged run folder
    (
        "config cut at a third",
        "train",
        "cut config",
        ["--resume", "{tmp}/run", "--epochs", "2"],
        "{tmp}/run/config.yaml: cut short: it ends at line",
    ),
    (
        "config cut, same name",
        "train",
        "cut config",
        [*FLAGS, "--output-dir", "{tmp}", "--run-name", "run"],
        "{tmp}/run/config.yaml: cut short: it ends at line",
    ),
    (
        "config not YAML",
        "train",
        "config not YAML",
        ["--resume", "{tmp}/run"],
        "{tmp}/run/config.yaml: not valid YAML at line",
    ),
    (
        "config without its last key",
        "train",
        "config without its last line",
        ["--resume", "{tmp}/run"],
        "without the key run.list_archs (a damaged run folder); restore the file, or pass --restart",
    ),
    (
        "fold all, config cut",
        "train",
        "cut cv config",
        ["--resume", "{tmp}/cv"],
        "{tmp}/cv/config.yaml: cut short",
    ),
    (
        "no config.yaml beside checkpoints",
        "train",
        "no config",
        ["--resume", "{tmp}/run"],
        "{tmp}/run: no config.yaml; is it a run folder of src.train?",
    ),
    (
        "history cut in its last row",
        "train",
        "cut history",
        ["--resume", "{tmp}/run", "--epochs", "2"],
        "{tmp}/run/history.csv: line 2 is cut short",
    ),
    (
        "classes.json missing",
        "train",
        "no classes",
        ["--resume", "{tmp}/run", "--epochs", "2"],
        "{tmp}/run/classes.json: missing from a run that has saved weights",
    ),
    (
        "classes.json not JSON",
        "train",
        "classes not JSON",
        ["--resume", "{tmp}/run", "--epochs", "2"],
        "{tmp}/run/classes.json: not a class list of src.train",
    ),
    (
        "folds.csv missing",
        "train",
        "no folds",
        ["--resume", "{tmp}/run", "--epochs", "2"],
        "{tmp}/run/folds.csv: missing from a run that has saved weights",
    ),
    (
        "folds.csv of another split",
        "train",
        "other split",
        ["--resume", "{tmp}/run", "--epochs", "2"],
        "{tmp}/run/folds.csv: the run's split differs from this command's at row 1",
    ),
    (
        "every checkpoint corrupt",
        "train",
        "corrupt checkpoints",
        ["--resume", "{tmp}/run", "--epochs", "2"],
        "no readable checkpoint among checkpoint_5.pt: each is truncated or corrupt",
    ),
    # values of the wrong type
    (
        "run config lr: fast",
        "train",
        "config lr text",
        ["--resume", "{tmp}/run"],
        "{tmp}/run/config.yaml: key 'lr' = 'fast': expected a number (float)",
    ),
    (
        "config file epochs: 2.5",
        "train",
        "config file epochs 2.5",
        ["--config", "{tmp}/bad.yaml"],
        "{tmp}/bad.yaml: key 'epochs' = 2.5: expected an integer",
    ),
    (
        "lr_find config lr: fast",
        "lr_find",
        "config file lr text",
        ["--config", "{tmp}/bad.yaml", "--output-dir", "{tmp}"],
        "{tmp}/bad.yaml: key 'lr' = 'fast': expected a number (float)",
    ),
    # a new --fold all run whose first fold is refused: its folder is never made
    (
        "new --fold all, missing pretrained",
        "train",
        "none",
        [*FLAGS, "--fold", "all", "--folds", "2", "--output-dir", "{tmp}", "--run-name", "new", "--pretrained",
         "{tmp}/gone.pt"],
        "pretrained weights file not found: {tmp}/gone.pt",
    ),
    # the command line
    ("--epoch for --epochs", "train", "none", ["--epoch", "3"], "--epoch, 3; did you mean --epochs?"),
    (
        "--restart with --resume auto",
        "train",
        "none",
        ["--resume", "auto", "--restart"],
        "--restart with --resume auto: name the run to train over",
    ),
]


@pytest.mark.parametrize("name, entry, damage, args, expected", CASES, ids=[c[0] for c in CASES])
def test_a_refused_command_answers_in_one_line_and_changes_no_file(
    trained, tmp_path, capsys, monkeypatch, name, entry, damage, args, expected
):
    """Both runs are copied beside the case's files; the whole folder (notes log, status files, checkpoints, any
    folder a stray write would make in the working directory) must be byte-identical afterwards."""
    for run in ("run", "cv"):
        _copy(trained, run, tmp_path)
    DAMAGE[damage](tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_refused(capsys, MAINS[entry], argv, tmp_path, expected.replace("{tmp}", str(tmp_path)))


def test_the_training_catalogue_holds_at_least_14_cases():
    assert len(CASES) >= 14 and len({c[0] for c in CASES}) == len(CASES)


def _kill_inside_a_checkpoint_write(run: Path) -> None:
    """Continues ``run`` in a subprocess that SIGKILLs itself right after torch.save has written its first file."""
    script = (
        "import os, signal, sys, torch\n"
        "save = torch.save\n"
        "def save_and_die(obj, f, *args, **kwargs):\n"
        "    save(obj, f, *args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = save_and_die\n"
        "from src.train import main\n"
        "main(sys.argv[1:])\n"
    )
    argv = [sys.executable, "-c", script, "--resume", str(run), "--epochs", "2"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True)
    assert done.returncode == -signal.SIGKILL


def test_a_run_that_goes_on_names_its_changes_rewrites_nothing_and_removes_its_interrupted_writes(
    trained, tmp_path, caplog
):
    run = _copy(trained, "run", tmp_path)
    _kill_inside_a_checkpoint_write(run)
    (left,) = files.leftovers(run)  # the killed write's: .best_model_2_...pt.<random>.tmp
    assert left.name.startswith(".best_model_2_") and left.stat().st_size > 1_000_000
    torch.save({"weights": torch.zeros(1000)}, run / "tmpq1w2e3r4")  # one of ignite's DiskSaver, killed before
    (run / "tmp_notes.txt").write_text("mine")  # a user's file: kept
    kept = {name: (run / name).read_bytes() for name in ("config.yaml", "classes.json", "folds.csv", "status.json")}
    sizes = left.stat().st_size + (run / "tmpq1w2e3r4").stat().st_size
    assert train_main(["--resume", str(run), "--epochs", "2", "--num-workers", "0"]) == 0
    assert f"continuing {run} with changed settings: epochs 1 -> 2" in caplog.text
    assert f"removed 2 temporary files of interrupted writes from {run} ({files.format_size(sizes)})" in caplog.text
    assert files.leftovers(run) == [] and (run / "tmp_notes.txt").read_text() == "mine"
    assert all((run / name).read_bytes() == data for name, data in kept.items() if name != "status.json")
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["epochs"] == 1  # as it started
    assert [row.split(",")[0] for row in (run / "history.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_a_failed_continuation_of_a_finished_run_keeps_its_status_and_logs_beside_the_run(
    trained, tmp_path, capsys, monkeypatch
):
    """The full disk comes inside torch.save; the run's config has no output_dir and the command runs elsewhere:
    the notes entry goes beside the run all the same, and status.json still says finished."""
    run = _copy(trained, "run", tmp_path)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["run"]["output_dir"]
    _replace(run / "config.yaml", yaml.safe_dump(saved, sort_keys=False).encode())
    status = (run / "status.json").read_bytes()
    weights = {name: print_ for name, print_ in fingerprint(run).items() if name.endswith(".pt")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    def full_disk(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    assert train_main(["--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: cannot write best_model_2_") and f" in {run} (No space left on device); " in line
    assert " free there: a full disk, or a file-size limit" in line and "Traceback" not in err
    assert (run / "status.json").read_bytes() == status  # finished, as before
    assert {name: fingerprint(run)[name] for name in weights} == weights and files.leftovers(run) == []
    assert f"{run.name}: crashed" in (tmp_path / "NOTES.md").read_text()  # beside the run
    assert list(elsewhere.iterdir()) == []


def test_the_file_size_limit_inside_torch_save_is_one_line_naming_the_folder(trained, tmp_path):
    """As on a full disk: torch's zip writer fails with ``RuntimeError: [enforce fail at inline_container.cc...]``
    when the process may write no larger file (RLIMIT_FSIZE, SIGXFSZ ignored)."""
    run = _copy(trained, "run", tmp_path)
    status = (run / "status.json").read_bytes()
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "from src.train import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", script, "--resume", str(run), "--epochs", "2", "--no-notes"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: cannot write ") and f" in {run} (the write failed); " in lines[0]
    assert "free there: a full disk, or a file-size limit (ulimit -f)" in lines[0]
    assert files.leftovers(run) == [] and (run / "status.json").read_bytes() == status


def test_restart_moves_a_damaged_run_aside_and_trains_it_over(trained, tmp_path):
    run = _copy(trained, "run", tmp_path)
    _cut_config(run, 1 / 3)
    before = fingerprint(run)
    assert train_main(["--resume", str(run), "--restart", *FLAGS]) == 0
    (aside,) = tmp_path.glob("run.before-restart-*")
    assert fingerprint(aside) == before  # every earlier file, as it was
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["restart"] is False
    assert (run / "summary.json").is_file()
    argv = ["--resume", str(run), "--restart", "--epochs", "3"]
    assert continue_command(argv, run) == "python -m src.train --resume " + f"{run} --epochs 3"


def test_leftovers_are_recognised_by_name_and_ignites_by_content_too(tmp_path):
    fd, ours = tempfile.mkstemp(dir=tmp_path, prefix=".checkpoint_10.pt.", suffix=".tmp")  # atomic_path's name
    os.close(fd)
    torch.save({}, tmp_path / "tmpa1b2c3d4")
    (tmp_path / "tmpz9y8x7w6").write_text("not a torch file")
    (tmp_path / ".history.csv.tmp").write_text("no random part")
    assert [p.name for p in files.leftovers(tmp_path)] == sorted([Path(ours).name, "tmpa1b2c3d4"])
    assert files.remove_leftovers(tmp_path)[0] == 2 and files.leftovers(tmp_path) == []
