"""Prediction files: `write_predictions` writes pandas' own bytes, and what it writes reads back exactly."""

import numpy as np
import pandas as pd
import pytest

import src.inference.oof
from src.inference.oof import float_text, predictions_frame, read_predictions, write_predictions
from src.targets import Head, Task

TAGS = Task("multilabel", (Head("tags", ("a", "b", "c", "d")),))
HEADS = Task("multihead", (Head("root", ("0", "1")), Head("vowel", ("x", "y", "z"))))


def awkward_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Probabilities as models give them (sigmoids down to 1e-12) and every layout Python's repr has: 0.0, 1.0,
    1e-05, 3e-07, NaN, negative and huge numbers, infinities, subnormals, random bit patterns."""
    special = [0.0, 1.0, -0.0, 1e-4, np.nextafter(1e-4, 0), 1e-5, 2.5e-5, 1e-6, 3e-7, 5e-324, 1e9, 1e16, 1e22,
               123.0, 0.1, 1 / 3, -1.5, np.nan, np.inf, -np.inf]
    bits = rng.integers(0, 2**63, n, dtype=np.uint64).view(np.float64)
    sigmoid = 1 / (1 + np.exp(-rng.normal(-6, 4, n)))
    return np.concatenate([special, bits, sigmoid, 10 ** rng.uniform(-30, 20, n)])


def test_float_text_is_numpys_str():
    values = awkward_numbers(np.random.default_rng(0), 20_000)
    expected = values.astype(str).astype(object)
    expected[np.isnan(values)] = ""  # pandas' empty field
    assert float_text(values).to_pylist() == expected.tolist()


@pytest.mark.parametrize("task", [TAGS, HEADS], ids=["tags", "heads"])
def test_write_predictions_writes_pandas_bytes(tmp_path, monkeypatch, task):
    rng = np.random.default_rng(1)
    probs = awkward_numbers(rng, 100)[: 60 * task.num_outputs].reshape(60, task.num_outputs)
    ids = [f"img{i}" for i in range(60)]
    ids[:4] = ["a,b", 'say "hi"', "", " padded"]  # quoted, quoted, empty, as is
    labels = {head.column: rng.choice(head.classes, 60).astype(object) for head in task.heads}
    labels[task.heads[0].column][5] = np.nan  # an empty label
    frames = [
        predictions_frame(ids, probs, task, folds=np.arange(60) % 5, labels=pd.DataFrame(labels)),
        predictions_frame(ids, probs, task),  # test predictions: the id alone before the numbers
    ]
    monkeypatch.setattr(src.inference.oof, "CHUNK_VALUES", 7 * task.num_outputs)  # several chunks and thread windows
    for k, frame in enumerate(frames):
        frame.to_csv(tmp_path / f"pandas{k}.csv", index=False)
        write_predictions(frame, tmp_path / f"ours{k}.csv")
        assert (tmp_path / f"ours{k}.csv").read_bytes() == (tmp_path / f"pandas{k}.csv").read_bytes()


def test_write_predictions_of_ids_with_line_breaks_and_of_other_frames_is_pandas(tmp_path):
    frames = [
        pd.DataFrame({"id": ["a\nb", "c"], "p_a": [0.5, 1e-5]}),  # quoted across lines
        pd.DataFrame({"id": ["a", "b"], "p_a": [0.5, 1e-5], "note": ["x", "y"]}),  # no float columns at the end
        pd.DataFrame({"p_a": [0.25, 3e-7], "p_b": [1.0, 0.0]}),  # numbers only
        pd.DataFrame({"id": pd.Series([], dtype=str), "p_a": pd.Series([], dtype=float)}),  # no rows
    ]
    for k, frame in enumerate(frames):
        frame.to_csv(tmp_path / f"pandas{k}.csv", index=False)
        write_predictions(frame, tmp_path / f"ours{k}.csv")
        assert (tmp_path / f"ours{k}.csv").read_bytes() == (tmp_path / f"pandas{k}.csv").read_bytes()


def test_written_predictions_read_back_exactly(tmp_path):
    rng = np.random.default_rng(2)
    probs = 1 / (1 + np.exp(-rng.normal(-6, 4, (200, 4))))
    labels = pd.DataFrame({"tags": rng.choice(["a", "b c", "d"], 200)})
    write_predictions(predictions_frame([str(i) for i in range(200)], probs, TAGS, np.zeros(200), labels),
                      tmp_path / "oof.csv")
    frame, read, targets = read_predictions(tmp_path / "oof.csv", TAGS)
    assert np.array_equal(read, probs) and frame["id"].tolist() == [str(i) for i in range(200)]
    assert targets.sum() == (labels["tags"] == "b c").sum() * 2 + (labels["tags"] != "b c").sum()
