"""ArcFace / CosFace heads: scaled cosine logits, the margin loss by hand and against pytorch-metric-learning."""

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.losses import MarginSoftmaxLoss, task_criterion
from src.model import Classifier, CosineHead
from src.targets import Head, Task
from src.train import main
from tests.test_cli import TINY


def _unit_head(kind: str, margin: float, scale: float) -> CosineHead:
    """Two classes whose weights are the unit vectors e1, e2: the cosines of an embedding (cos a, sin a)
    with the classes are cos a and sin a."""
    head = CosineHead(2, 2, kind, margin=margin, scale=scale)
    with torch.no_grad():
        head.margin_loss.W.copy_(torch.eye(2))  # pytorch-metric-learning keeps W as (embedding_size, num_classes)
    return head


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_loss_by_hand(kind):
    a = math.radians(30)
    scale, margin = 10.0, (20.0 if kind == "arcface" else 0.2)
    head = _unit_head(kind, margin, scale)
    x = torch.tensor([[math.cos(a), math.sin(a)]])  # 30 degrees from class 0, 60 from class 1
    logits = head(x)
    assert torch.allclose(logits, scale * torch.tensor([[math.cos(a), math.sin(a)]]), atol=1e-5)

    target_logit = math.cos(a + math.radians(margin)) if kind == "arcface" else math.cos(a) - margin
    z0, z1 = scale * target_logit, scale * math.sin(a)
    expected = -z0 + math.log(math.exp(z0) + math.exp(z1))  # cross entropy with the margin on class 0
    loss = MarginSoftmaxLoss(head.margin_loss)(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() > F.cross_entropy(logits, torch.tensor([0])).item()  # the margin makes it harder


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_loss_equals_the_library_loss_on_embeddings(kind):
    torch.manual_seed(0)
    head = CosineHead(8, 5, kind)
    x, y = torch.randn(16, 8), torch.randint(0, 5, (16,))
    ours = MarginSoftmaxLoss(head.margin_loss)(head(x), y)
    assert ours.item() == pytest.approx(head.margin_loss(x, y).item(), rel=1e-5)
    soft = MarginSoftmaxLoss(head.margin_loss)(head(x), F.one_hot(y, 5).float())  # mixup's soft targets
    assert soft.item() == pytest.approx(ours.item(), rel=1e-5)


def test_margin_head_refuses_several_heads_and_other_losses():
    with pytest.raises(ValueError, match="margin heads"):
        Classifier(nn.Identity(), 4, [3, 2], head="arcface")
    task = Task("single", (Head("label", ("a", "b")),))
    with pytest.raises(ValueError, match="--loss ce"):
        task_criterion(task, loss="focal", margin_loss=CosineHead(4, 2, "arcface").margin_loss)


def test_cli_arcface_with_accumulation_mixup_and_resume(tmp_path):
    flags = ["--head", "arcface", "--accumulation-steps", "2", "--mixup-alpha", "0.4"]
    flags += ["--output-dir", str(tmp_path), "--run-name", "arc", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    assert main(["--resume", str(tmp_path / "arc"), "--epochs", "2"]) == 0
    state = torch.load(tmp_path / "arc" / "checkpoint_2.pt", weights_only=False)["model"]
    assert state["fc.margin_loss.W"].shape == (1280, 10)  # effnet-b0 features x classes
    with (tmp_path / "arc" / "history.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
