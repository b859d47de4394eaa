"""Submission formats and the sample-submission check: tiny examples by hand."""

import numpy as np
import pandas as pd
import pytest

from src.inference.submission import SubmissionFormat, make_submission, match_sample
from src.targets import Head, Task

SINGLE = Task("single", (Head("word", ("the sun", "cat", "house")),))


PROBS = np.array([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]])


def test_label_and_top_k_formats():
    label = make_submission(["a", "b"], PROBS, SINGLE, SubmissionFormat("label", id_col="key_id"))
    assert label.to_dict("list") == {"key_id": ["a", "b"], "word": ["the sun", "cat"]}
    top = make_submission(["a", "b"], PROBS, SINGLE, SubmissionFormat("topk", id_col="key_id", top_k=3))
    assert top["word"].tolist() == ["the_sun house cat", "cat house the_sun"]  # QuickDraw: underscores


def test_tags_format_uses_per_class_thresholds():
    task = Task("multilabel", (Head("tags", ("clear", "road", "water")),))
    probs = np.array([[0.9, 0.25, 0.1], [0.3, 0.1, 0.6]])
    sub = make_submission(
        ["x", "y"], probs, task, SubmissionFormat("tags", id_col="image_name", threshold=np.array([0.5, 0.2, 0.7]))
    )
    assert sub["tags"].tolist() == ["clear road", ""]


def test_long_format_has_one_row_per_image_and_head():
    task = Task("multihead", (Head("root", ("0", "1", "2")), Head("vowel", ("0", "1"))))
    probs = np.array([[0.1, 0.7, 0.2, 0.9, 0.1], [0.6, 0.3, 0.1, 0.2, 0.8]])
    sub = make_submission(["Test_0", "Test_1"], probs, task, SubmissionFormat("long"))
    assert sub.to_dict("list") == {
        "row_id": ["Test_0_root", "Test_0_vowel", "Test_1_root", "Test_1_vowel"],
        "target": ["1", "0", "0", "1"],
    }


def test_probs_format_clips():
    sub = make_submission(
        ["a", "b"], np.array([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3]]), SINGLE, SubmissionFormat("probs", clip=0.01)
    )
    assert list(sub.columns) == ["id", "the sun", "cat", "house"]
    assert sub.iloc[0, 1:].tolist() == [0.99, 0.01, 0.01]


def test_format_must_fit_the_task():
    with pytest.raises(ValueError, match="not for a single task"):
        make_submission(["a", "b"], PROBS, SINGLE, SubmissionFormat("long"))


def test_sample_submission_fixes_order_and_names_and_rejects_other_ids(tmp_path):
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"ImageId": ["b", "a"], "Label": ["cat", "cat"]}).to_csv(sample, index=False)
    sub = match_sample(make_submission(["a", "b"], PROBS, SINGLE, SubmissionFormat("label")), sample)
    assert sub.to_dict("list") == {"ImageId": ["b", "a"], "Label": ["cat", "the sun"]}
    with pytest.raises(ValueError, match=r"1 ids of the sample are not predicted \(e.g. \['b'\]\)"):
        match_sample(make_submission(["a", "c"], PROBS, SINGLE, SubmissionFormat("label")), sample)
