"""The config groups of how a run runs and is recorded: tracking, the run itself, the competition's files."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from src.config.choices import SUBMISSION_FORMATS
from src.config.fields import Group, Names, parse_duration, parse_names, require, setting


@dataclasses.dataclass
class TrackConfig(Group):
    """Tracking: TensorBoard pictures, the notes log, notifications, MLflow. None of them changes the training."""

    pictures: bool = setting(True, trains=False)
    """TensorBoard pictures: augmented images at the start; at each validation the confusion matrix, per-class
    precision and recall, the most confidently wrong images (PR curves for multi-label tasks)."""
    top_losses: int = setting(16, trains=False)
    """How many of the valid images with the highest loss TensorBoard shows at each validation."""
    notes: bool = setting(True, trains=False)
    """Append an entry to the notes log when the run finishes, stops or crashes (--no-notes: do not)."""
    notes_file: str | None = setting(None, trains=False)
    """The notes log (Markdown); None: NOTES.md beside the run folder (<output-dir>/NOTES.md of a new run)."""
    note: str | None = setting(None, trains=False)
    """Your own words for the run's notes entry: the hypothesis it tests."""
    notify: Names | None = setting(None, trains=False)
    """Where to send a message when the run finishes, stops early or crashes: webhook URLs (Slack, Discord, ntfy:
    a JSON POST) and/or mailto:you@example.org (SMTP settings from SMTP_HOST, SMTP_PORT, SMTP_USER,
    SMTP_PASSWORD, SMTP_FROM, SMTP_STARTTLS)."""
    mlflow: str | None = setting(None, trains=False)
    """Log params, metrics per epoch and the summary to MLflow at this tracking URI (http://host:5000, or a local
    folder such as ./mlruns); needs `pip install mlflow`."""
    mlflow_experiment: str = setting("kaggle-trainer", trains=False)
    """The MLflow experiment the runs are logged under."""
    mlflow_artifacts: bool = setting(False, trains=False)
    """Also upload the best checkpoint and the valid predictions (oof.csv for --fold all) to MLflow."""

    def check(self) -> None:
        self.notify = parse_names(self.notify)
        require("top_losses", self.top_losses, self.top_losses >= 0, "an integer >= 0")
        for target in self.notify or ():
            ok = target.startswith(("http://", "https://")) or bool(re.fullmatch(r"mailto:[^@\s]+@[^@\s]+", target))
            require("notify", target, ok, "a webhook URL (http:// or https://) or mailto:name@host")


@dataclasses.dataclass
class RunConfig(Group):
    """Run control: seed, run folder, resume, device, logging, debug caps."""

    seed: int = 42
    """Seed of the model init, the data order, augmentation and mixup, and of the folds unless --split-seed is set."""
    n_saved: int = setting(2, trains=False)
    """Number of best checkpoints (by the valid --metric) to keep."""
    resume: str | None = setting(None, trains=False, folder=True)
    """Continue a run from a `checkpoint_*.pt` file or from a run folder (its newest readable checkpoint); 'auto':
    the newest unfinished run in --output-dir with the same settings, or a new run. Running the same command with
    the same --run-name continues that run too."""
    restart: bool = setting(False, trains=False, folder=True)
    """Train the run folder named by --run-name (or --resume) over from scratch with this command's settings: its
    earlier files are first moved aside, whole, to '<run>.before-restart-<timestamp>' beside it (nothing is
    deleted), and its config.yaml is not read. Without --restart an existing run folder is only ever continued,
    and a damaged one stops the command."""
    checkpoint_every: str = setting("10m", trains=False)
    """Save the training state inside epochs too: every this many optimizer steps ('500') or this much wall time
    ('20m', '1h', '90s'); 'epoch' saves at epoch ends only. A kill loses at most this much training."""
    time_limit: str | None = setting(None, trains=False)
    """Stop cleanly before this much wall time has passed since the start ('11h30m' for Kaggle's 12-hour
    sessions), keeping a margin for the last validation and the save; the same command continues the run."""
    time_budget: str | None = setting(None, trains=False)
    """--fold all: plan the folds to fit this much wall time ('9h'): fold 0 measures the pace, the later folds get
    fewer epochs (down to half) or are left out when they would not fit (`src.training.budget`); --time-limit stays the
    hard stop."""
    output_dir: str = setting("experiments", trains=False)
    """Parent folder of the run folders."""
    run_name: str | None = setting(None, trains=False, folder=True)
    """Run folder name under output_dir; None makes '<arch>-fold<fold>-<timestamp>'."""
    device: str = setting("auto", trains=False)
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    log_every: int | Literal["auto"] = setting("auto", trains=False)
    """Read the training loss every this many iterations: TensorBoard's loss and lr, the progress bar, the stop on a
    NaN loss. Each read waits for the GPU. 'auto': every iteration on the CPU, every 50 on CUDA."""
    max_iters_per_epoch: int | None = None
    """Debug cap on the training iterations per epoch."""
    dry_run: bool = setting(False, trains=False)
    """Check a config in seconds: 1% of the data (at least one batch), one epoch, no files written. Also DRY_RUN=1."""
    progress: bool = setting(True, trains=False)
    """Show the progress: a bar on a terminal; in a file (SLURM, nohup) a line at most every 30 seconds and one per
    epoch."""
    list_archs: bool = setting(False, trains=False)
    """Print the known architectures and exit."""

    def check(self) -> None:
        require("n_saved", self.n_saved, self.n_saved >= 1, "an integer >= 1")
        if self.restart and self.resume == "auto":
            raise ValueError("--restart with --resume auto: name the run to train over (--run-name or --resume RUN)")
        if isinstance(self.log_every, str) and self.log_every.isdigit():  # from a config file
            self.log_every = int(self.log_every)
        ok = self.log_every == "auto" or (isinstance(self.log_every, int) and self.log_every >= 1)
        require("log_every", self.log_every, ok, "an integer >= 1 or 'auto'")
        cap = self.max_iters_per_epoch
        require("max_iters_per_epoch", cap, cap is None or cap >= 1, "an integer >= 1 or None")
        every = self.checkpoint_every
        ok = every == "epoch" or (every.isdigit() and int(every) >= 1) or bool(parse_duration(every))
        require("checkpoint_every", every, ok, "optimizer steps (500), a wall time (20m, 1h, 90s) or 'epoch'")
        for name in ("time_limit", "time_budget"):
            value = getattr(self, name)
            ok = value is None or bool(parse_duration(value))
            require(name, value, ok, "a wall time such as 11h30m, 45m or 600s")

    @property
    def checkpoint_steps(self) -> int | None:
        """``--checkpoint-every`` in optimizer steps, or None."""
        return int(self.checkpoint_every) if self.checkpoint_every.isdigit() else None

    @property
    def checkpoint_seconds(self) -> float | None:
        """``--checkpoint-every`` as wall time in seconds, or None."""
        return None if self.checkpoint_every == "epoch" else parse_duration(self.checkpoint_every)

    @property
    def time_limit_s(self) -> float | None:
        """``--time-limit`` in seconds, or None."""
        return parse_duration(self.time_limit) if self.time_limit else None


@dataclasses.dataclass
class CompetitionConfig(Group):
    """Competition: where the data came from, its test set and its submission (README "From Kaggle and back").

    `python -m src.kaggle inspect` writes these into the folder's ``train.yaml``; they travel in the run's config,
    so ``src.predict --run R`` predicts the competition's test set without flags and ``src.kaggle submit`` and
    ``bundle`` know the competition. They never change how a model trains.
    """

    competition: str | None = setting(None, trains=False)
    """The Kaggle competition's name, as in its URL (kaggle.com/competitions/<name>)."""
    data_root: str | None = setting(None, trains=False)
    """The competition's folder; the offline bundle finds the test files at the same place under its input."""
    test_csv: str | None = setting(None, trains=False)
    """The test table (ids); src.predict's default --test-csv."""
    test_image_dir: str | None = setting(None, trains=False)
    """Folder of the test images (layout 'images'); src.predict's default --image-dir."""
    test_parquet: str | None = setting(None, trains=False)
    """Parquet file(s) of the test images (layout 'parquet'); src.predict's default --parquet."""
    sample_submission: str | None = setting(None, trains=False)
    """The competition's sample submission; src.predict's default --sample-submission."""
    submission_format: Literal[SUBMISSION_FORMATS] | None = setting(None, trains=False)
    """src.predict's default --submission-format (None: by the task)."""
