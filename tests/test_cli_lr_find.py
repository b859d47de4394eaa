"""python -m src.lr_find: the range swept, plot and curve saved, bad ranges named."""

import pandas as pd
import pytest

from src.lr_find import main

TINY = ["--data-fraction", "0.04", "--batch-size", "16", "--no-progress"]


def test_lr_find_sweeps_the_range_and_saves_plot_and_curve(tmp_path, capsys):
    flags = [*TINY, "--output-dir", str(tmp_path), "--lr-find-iters", "30", "--lr-find-start", "1e-5"]
    assert main([*flags, "--lr-find-end", "10"]) == 0
    out = tmp_path / "lr_find-effnet-b0"
    assert (out / "lr_find.png").stat().st_size > 0
    curve = pd.read_csv(out / "lr_find.csv")
    assert 1e-5 <= curve["lr"].iloc[0] < 2e-5 and curve["lr"].is_monotonic_increasing and 10 <= len(curve) <= 30
    assert "suggested lr" in capsys.readouterr().out  # 30 noisy iterations may give no U-shape: value or none


def test_lr_find_rejects_an_empty_range(capsys):
    assert main([*TINY, "--lr-find-start", "1.0", "--lr-find-end", "0.1", "--dry-run"]) == 2
    assert "expected 0 < start < end" in capsys.readouterr().err


@pytest.mark.slow
def test_lr_find_suggests_a_value_inside_the_range_on_the_digits(tmp_path, capsys):
    """100 iterations of the default model on the bundled digits (about 60 s on 2 cores)."""
    assert main(["--no-progress", "--output-dir", str(tmp_path), "--lr-find-iters", "100"]) == 0
    suggested = float(capsys.readouterr().out.split()[2])
    curve = pd.read_csv(tmp_path / "lr_find-effnet-b0" / "lr_find.csv")
    assert curve["lr"].min() < suggested < curve["lr"].max()
