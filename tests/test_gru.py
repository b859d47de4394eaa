"""--arch gru: QuickDraw strokes as (dx, dy, pen) sequences, a GRU that ignores padding, training from the CLI."""

import csv

import numpy as np
import torch

from src.model import GRUBackbone, build_model
from src.sources import strokes_to_sequence
from src.train import main
from tests import layouts


def test_strokes_become_dx_dy_pen_rows_padded_with_a_mask():
    strokes = [np.array([[0, 0], [255, 0]]), np.array([[255, 255]])]
    seq = strokes_to_sequence(strokes, max_strokes=3, max_stroke_length=2)
    assert seq.shape == (6, 4) and seq.dtype == np.float32
    expected = [[0, 0, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert np.allclose(seq, expected)
    # the caps: the first stroke only, and the first point of each stroke
    assert np.allclose(strokes_to_sequence(strokes, 1, 2)[:, 3], [1, 1])
    assert np.allclose(strokes_to_sequence(strokes, 2, 1)[:, :3], [[0, 0, 1], [1, 1, 1]])


def test_gru_output_does_not_depend_on_the_padding():
    torch.manual_seed(0)
    backbone = GRUBackbone(in_chans=4, hidden_size=8, num_layers=2).eval()
    points = torch.cat([torch.randn(1, 3, 3), torch.ones(1, 3, 1)], dim=2)  # 3 real points
    short = torch.cat([points, torch.zeros(1, 2, 4)], dim=1)
    long = torch.cat([points, torch.zeros(1, 7, 4)], dim=1)
    out = backbone(short)
    assert out.shape == (1, 8, 1, 1)
    assert torch.allclose(out, backbone(long), atol=1e-6)
    model = build_model("gru", num_classes=5, in_chans=4, arch_options={"hidden_size": 8, "num_layers": 1})
    assert model(long.repeat(2, 1, 1)).shape == (2, 5)


def test_cli_gru_learns_the_strokes(tmp_path):
    folder = layouts.stroke_csvs(tmp_path, per_class=40)  # 3 classes told apart by their number of strokes
    flags = ["--arch", "gru", "--train-csv", str(folder / "*.csv"), "--label-col", "word", "--id-col", "key_id"]
    flags += ["--hidden-size", "32", "--num-layers", "1", "--epochs", "6", "--batch-size", "16", "--lr", "1e-2"]
    assert main([*flags, "--no-progress", "--output-dir", str(tmp_path), "--run-name", "gru"]) == 0
    with (tmp_path / "gru" / "history.csv").open() as f:
        accuracy = [float(r["valid_accuracy"]) for r in csv.DictReader(f)]
    assert accuracy[0] < 0.9 and max(accuracy) >= 0.9  # learns: from near chance to >= 90% of 24 drawings


def test_arch_and_data_must_agree(capsys):
    assert main(["--arch", "gru", "--dry-run", "--no-progress"]) == 2  # the bundled digits are images
    assert "--arch gru reads QuickDraw strokes" in capsys.readouterr().err
