import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.targets import Head, Task
from src.tracking import pictures


class RecordingWriter:
    """Keeps what would be written to TensorBoard: {tag: value}."""

    def __init__(self):
        self.logged = {}

    def add_image(self, tag, image, step, dataformats="CHW"):
        self.logged[tag] = np.asarray(image)

    def add_figure(self, tag, figure, step):
        self.logged[tag] = figure

    def add_text(self, tag, text, step):
        self.logged[tag] = text

    def add_pr_curve(self, tag, labels, predictions, step):
        self.logged[tag] = (labels, predictions)


def test_to_rgb_denormalises_and_shows_1_3_and_6_channels():
    mean, std = [0.5], [0.25]
    grey = pictures.to_rgb(torch.full((1, 1, 2, 2), -1.0), mean, std)  # -1 * 0.25 + 0.5 = 0.25
    assert grey.shape == (1, 3, 2, 2) and torch.allclose(grey, torch.full_like(grey, 0.25))
    rgb = torch.rand(2, 3, 4, 4)
    assert torch.allclose(pictures.to_rgb(rgb, [0, 0, 0], [1, 1, 1]), rgb)
    six = torch.zeros(1, 6, 2, 2)
    six[:, 3] = 1.0  # the fourth channel is yellow: red and green
    six[:, 0, 0, 0] = 1.0  # and red in one pixel: 2 red, 1 green there, scaled into [0, 1]
    shown = pictures.to_rgb(six, [0] * 6, [1] * 6)
    assert shown[0, :, 0, 1].tolist() == [0.5, 0.5, 0.0] and shown[0, :, 0, 0].tolist() == [1.0, 0.5, 0.0]
    assert pictures.image_grid(torch.rand(5, 6, 8, 8), [0] * 6, [1] * 6).shape[0] == 3


def test_the_confusion_matrix_of_many_classes_shows_those_with_the_most_errors():
    classes = [f"c{k}" for k in range(30)]
    matrix = np.diag(np.full(30, 5))
    matrix[25, 26] = matrix[3, 4] = 4  # errors between c25/c26 and c3/c4
    figure = pictures.confusion_figure(matrix, classes, "valid")
    shown = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert len(shown) == pictures.MAX_CLASSES and {"c3", "c4", "c25", "c26"} <= set(shown)
    assert "20 of 30 classes" in figure.axes[0].get_title()


def test_the_per_class_table():
    table = pictures.per_class_table(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["cat", "dog", "eel"])
    lines = table.splitlines()
    assert lines[2] == "| cat | 1.000 | 0.500 | 0.667 | 2 |"
    assert lines[3] == "| dog | 0.667 | 1.000 | 0.800 | 2 |"
    assert lines[4] == "| eel | 0.000 | 0.000 | 0.000 | 0 |"


def _single(n):
    return Task("single", (Head("label", tuple("abcd"[:n])),))


def test_validation_outputs_per_task_kind():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    outputs = pictures.ValidationOutputs(_single(3))
    outputs.update(logits, torch.tensor([0, 2]))
    got = outputs.gathered()
    assert np.allclose(got["loss"], F.cross_entropy(logits, torch.tensor([0, 2]), reduction="none").numpy())
    assert got["pred"][:, 0].tolist() == [0, 1] and got["true"][:, 0].tolist() == [0, 2]
    assert np.allclose(got["conf"][:, 0], logits.softmax(1).max(1).values.numpy())

    heads = Task("multihead", (Head("a", ("x", "y")), Head("b", ("p", "q", "r"))))
    outputs = pictures.ValidationOutputs(heads)
    outputs.update(torch.tensor([[0.0, 1.0, 5.0, 0.0, 0.0]]), torch.tensor([[1, 2]]))
    got = outputs.gathered()
    assert got["pred"].tolist() == [[1, 0]] and got["true"].tolist() == [[1, 2]]

    tags = Task("multilabel", (Head("tags", ("haze", "road")),))
    outputs = pictures.ValidationOutputs(tags)
    outputs.update(torch.tensor([[3.0, -3.0]]), torch.tensor([[1.0, 1.0]]))
    got = outputs.gathered()
    assert got["probs"][0, 0] > 0.9 and got["probs"][0, 1] < 0.1 and got["loss"][0] > 3


def test_top_losses_show_the_highest_losses_first_with_their_labels():
    results = {
        "loss": np.array([0.1, 0.9, 0.5]),
        "true": np.array([[0], [1], [2]]),
        "pred": np.array([[0], [0], [0]]),
        "conf": np.array([[0.9], [0.8], [0.7]]),
    }
    images = {i: torch.full((1, 8, 8), i / 10) for i in range(3)}  # row i is grey at i / 10
    def view(dataset, rows):  # Loaders.view: the rows' images as the model sees them, (N, C, H, W)
        return torch.stack([dataset[row] for row in rows])

    loaders = types.SimpleNamespace(valid_images=images, view=view, mean=[0.0], std=[1.0])
    writer = RecordingWriter()
    pictures.log_top_losses(writer, results, _single(3), loaders, "valid", 1, k=2)
    grid = writer.logged["valid/top_losses"]
    tile = 128
    assert grid.shape[1] == 4 * (tile + 4) and grid.dtype == np.uint8
    assert grid[10, 10, 0] == round(255 * 0.1) and grid[10, tile + 14, 0] == round(255 * 0.2)  # rows 1, then 2
    assert pictures._caption(results, _single(3), 1) == "true b\npred a 0.80\nloss 0.90"


def test_class_views_of_a_multilabel_task_draw_pr_curves_of_the_most_frequent_tags():
    tags = Task("multilabel", (Head("tags", tuple(f"t{k}" for k in range(25))),))
    true = np.zeros((40, 25))
    true[:, 7] = 1
    results = {"true": true, "probs": np.random.default_rng(0).random((40, 25))}
    writer = RecordingWriter()
    pictures.log_class_views(writer, results, tags, "valid", 3)
    curves = [t for t in writer.logged if t.startswith("valid/pr_curve/")]
    assert len(curves) == pictures.MAX_CLASSES and "valid/pr_curve/t7" in curves
    assert "| t7 |" in writer.logged["valid/per_class"]


@pytest.mark.parametrize("value", [0.001, (1, 2), None])
def test_hparams_accept_any_setting(tmp_path, value):
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        pictures.log_hparams(writer, {"lr": value, "arch": "resnet18"}, {"hparam/best": 0.5})
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "hparams"))
    events.Reload()
    start = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"lr" in start and b"resnet18" in start
    assert events.Scalars("hparam/best")[-1].value == 0.5
