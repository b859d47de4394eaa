"""The names of the config's choice flags (`src.config.choices`): ``--help`` offers exactly them, and the module that
builds each choice takes every one of them; the metrics' names, which the config checks but does not list as choices,
are all in ``--metric``'s help."""

import re

import pytest
import torch
import torchvision
from torch import nn

from src.config import LossConfig, ModelConfig, OptimConfig, choices
from src.layers.backbones import set_output_stride
from src.layers.heads import CosineHead, LargeMarginHead
from src.losses import task_criterion
from src.metrics import METRIC_NAMES
from src.model import Classifier
from src.targets import Head, Task
from src.tools.cli_reference import help_text
from src.training import optim

CHOICES = {
    "--loss": choices.LOSSES,
    "--head": choices.HEADS,
    "--output-stride": choices.OUTPUT_STRIDES,
    "--optimizer": choices.OPTIMIZERS,
    "--scheduler": choices.SCHEDULERS,
    "--submission-format": choices.SUBMISSION_FORMATS,
}


@pytest.fixture(scope="module")
def train_help() -> str:
    return help_text("src.train")


@pytest.mark.parametrize("flag", CHOICES)
def test_the_flags_choices_are_the_registrys_names(train_help, flag):
    offered = re.search(rf"{flag} \{{([^}}]*)\}}", train_help)
    assert offered is not None, f"{flag} offers no choices in --help"
    names = [name for name in offered.group(1).split(",") if name != "None"]  # None: the flag's unset default
    assert names == [str(name) for name in CHOICES[flag]]


@pytest.mark.parametrize("command", ["src.predict", "src.ensemble"])
def test_the_output_commands_offer_the_same_submission_formats(command):
    offered = re.search(r"--submission-format \{([^}]*)\}", help_text(command))
    assert offered is not None and offered.group(1).split(",") == ["None", *choices.SUBMISSION_FORMATS]


def test_the_optimizers_registry_is_keyed_by_the_names():
    assert tuple(optim.OPTIMIZERS) == choices.OPTIMIZERS


def test_every_metric_is_named_in_the_metric_flags_help(train_help):
    start = train_help.index("--metric")
    text = " ".join(train_help[start : train_help.index("\n  --", start)].split())
    assert [name for name in METRIC_NAMES if name not in text] == []


@pytest.mark.parametrize("name", choices.HEADS)
def test_every_head_builds(name):
    model = Classifier(nn.Identity(), 4, 3, ModelConfig(head=name)).eval()
    assert model(torch.randn(2, 4, 1, 1)).shape == (2, 3)  # (N, num_classes) from feature maps (N, 4, 1, 1)


@pytest.mark.parametrize("name", choices.LOSSES)
def test_every_loss_trains_some_task(name):
    classes = Head("label", ("a", "b", "c"))
    heads = {head: Classifier(nn.Identity(), 4, 3, ModelConfig(head=head)).fc for head in choices.HEADS}
    cases = [(Task("single", (classes,)), fc) for fc in heads.values()]
    cases += [(Task("multilabel", (classes,)), heads["linear"]), (Task("multihead", (classes, classes)), None)]
    built = []
    for task, fc in cases:
        margin_head = fc if isinstance(fc, CosineHead | LargeMarginHead) else None
        try:
            built.append(task_criterion(task, LossConfig(loss=name), margin_head))
        except ValueError as error:
            assert "expected one of" not in str(error)  # a known name, refused for this task or head only
    assert built, f"--loss {name}: no task and head it trains"


@pytest.mark.parametrize("stride", choices.OUTPUT_STRIDES)
def test_every_output_stride_applies(stride):
    net = torchvision.models.resnet18()
    set_output_stride(net, stride)
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_an_output_stride_outside_the_names_is_refused():
    with pytest.raises(ValueError, match="expected one of 8, 16, 32"):
        set_output_stride(torchvision.models.resnet18(), 4)


@pytest.mark.parametrize("name", choices.OPTIMIZERS)
def test_every_optimizer_builds(name):
    optimizer = optim.build_optimizer(nn.Linear(2, 2), OptimConfig(optimizer=name))
    assert optimizer.param_groups[0]["lr"] == OptimConfig().lr


@pytest.mark.parametrize("name", choices.SCHEDULERS)
def test_every_scheduler_builds(name):
    config = OptimConfig(scheduler=name)
    optimizer = optim.build_optimizer(nn.Linear(2, 2), config)
    scheduler = optim.build_lr_scheduler(optimizer, config, total_steps=20, warmup_steps=4)
    assert (scheduler is None) == (name == "none")
