"""The GPU path on a real GPU (skipped without one; `benchmarks/gpu.sh` runs them: ``pytest tests/ -m cuda``): what
the CPU tests show with stand-ins (the meta device, faked generator calls), shown on CUDA itself."""

import json

import pytest
import torch
from torch import nn

from src.config import OptimConfig, StepConfig
from src.layers.heads import CosineHead
from src.losses import cross_entropy
from src.tracking.rundir import read_config
from src.train import main
from src.training.averaging import build_swa
from src.training.engine import create_trainer, predict_logits
from src.training.optim import build_optimizer
from src.training.runstate import RandomStates
from src.utils import distributed
from tests.helpers import TINY, TinyConvNet, make_blobs

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


def test_swa_buffers_live_on_the_gpu():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).to(CUDA)
    assert {t.device.type for t in [*build_swa(model).parameters(), *build_swa(model).buffers()]} == {"cuda"}


def test_the_gpus_generator_resumes_draw_for_draw():
    states = RandomStates(CUDA)
    saved = states.state_dict()
    assert len(saved["per_rank"][0]["cuda"]) == 1
    first = torch.rand(4, device=CUDA)
    torch.cuda.manual_seed(123)
    states.load_state_dict(saved)
    assert torch.equal(first, torch.rand(4, device=CUDA))


def test_gathered_state_holds_no_cuda_tensor():
    (state,) = distributed.per_rank({"grads": [torch.ones(3, device=CUDA), None]})
    assert state["grads"][0].device.type == "cpu"


def test_margin_heads_stay_fp32_under_bf16_autocast_on_the_gpu():
    head = CosineHead(8, 5, "arcface").to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert head(torch.randn(4, 8, device=CUDA)).dtype == torch.float32


def test_auto_precision_and_fused_adamw_train_without_a_grad_scaler_on_bf16_gpus():
    model = TinyConvNet(num_classes=3).to(CUDA)
    optimizer = build_optimizer(model, OptimConfig())
    assert optimizer.param_groups[0]["fused"]
    trainer = create_trainer(model, optimizer, cross_entropy(), CUDA, StepConfig(amp="auto"))
    assert trainer.state.scaler.is_enabled() != torch.cuda.is_bf16_supported()
    x, y = make_blobs(32, 3, size=8)
    trainer.run([(x[:16], y[:16]), (x[16:], y[16:])] * 3, max_epochs=1)
    logits = predict_logits(model, [(x, y)], CUDA, StepConfig())
    assert logits.device.type == "cpu" and logits.shape == (32, 3) and torch.isfinite(logits).all()


def test_a_tiny_run_on_the_gpu_resolves_the_cuda_defaults(tmp_path):
    flags = [*TINY, "--epochs", "1", "--output-dir", str(tmp_path), "--run-name", "gpu", "--num-workers", "2"]
    assert main([*flags, "--device", "cuda"]) == 0
    saved = read_config(tmp_path / "gpu")
    assert saved.run.log_every == 50 and saved.step.amp == "auto"
    summary = json.loads((tmp_path / "gpu" / "summary.json").read_text())
    assert summary["train_images_per_s"] > 0
