"""Manifold mixup (`src.layers.manifold`): the stages every CNN family of the registry offers, the mix at the drawn
stage and nowhere before it, the one-shot hook, and the sequence model's refusal."""

import numpy as np
import pytest
import torch

from src.config import ModelConfig
from src.layers.manifold import StageMixer, find_stages
from src.mixup import Mixup
from src.model import MIN_INPUT, build_model

# One arch per family of the registry (about 20 s for all on 2 cores).
FAMILIES = [
    "effnet-b0",
    "resnet18",
    "se_resnext50_32x4d",
    "densenet121",
    "xception",
    "inceptionv4",
    "nasnetamobile",
    "resnext101_32x4d",
    "inceptionresnetv2",
    "polynet",
    "pnasnet5large",
    "fbresnet152",
    "senet154",
]


def _model_and_images(arch):
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, in_chans=3, drop_path_rate=0.0)  # no random stochastic depth in training passes
    model = build_model(config, 5).eval()
    size = max(MIN_INPUT.get(arch, 32), 64)
    return model, torch.randn(4, 3, size, size)


def _close(got, want):
    """Equal up to float error, relative to the tensor's scale (fresh effnet activations are ~1e-9)."""
    return bool((got - want).abs().max() <= 1e-4 * want.abs().max())


def _outputs(modules, model, x):
    """Runs ``model`` on ``x`` and returns the output of each module of ``modules`` (copied: in-place ReLUs follow)."""
    seen = {}
    handles = [
        m.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o.clone())) for k, m in enumerate(modules)
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return [seen[k] for k in range(len(modules))]


@pytest.mark.parametrize("arch", FAMILIES)
def test_the_drawn_stage_sees_mixed_activations_and_the_stages_before_it_unmixed(arch):
    model, x = _model_and_images(arch)
    stages = find_stages(model.backbone, x[:2])
    assert stages or arch in ("nasnetamobile", "pnasnet5large")  # cells that read two earlier cells: fewer stages
    sizes = [out.shape[-1] for out in _outputs(stages, model, x)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)  # one per resolution
    plain = _outputs(stages, model, x)
    mixer = StageMixer(model)
    mixer.stages = stages
    weights, index = [0.7, 0.3], [torch.arange(4), torch.tensor([2, 3, 0, 1])]
    for stage in range(1, len(stages) + 1):
        raw, mixed = {}, {}
        layer = stages[stage - 1]
        handles = [layer.register_forward_hook(lambda m, i, o, raw=raw: raw.__setitem__("out", o.clone()))]
        model.train()  # the armed mix fires in training passes only; dropout and batch statistics are off below
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.Dropout)):
                module.eval()
        mixer.arm(stage, weights, index)
        handles.append(layer.register_forward_hook(lambda m, i, o, mixed=mixed: mixed.__setitem__("out", o.clone())))
        before = _outputs(stages[: stage - 1], model, x)
        for handle in handles:
            handle.remove()
        assert _close(mixed["out"], 0.7 * raw["out"] + 0.3 * raw["out"][index[1]])
        assert not _close(mixed["out"], raw["out"])
        for got, want in zip(before, plain):
            assert _close(got, want)  # the stages before the drawn one are not mixed
        model.eval()


def test_the_mix_fires_once_and_never_in_evaluation():
    model, x = _model_and_images("resnet18")
    mixer = StageMixer(model)
    mixer.draw(x, np.random.default_rng(0))
    layer = mixer.stages[0]
    mixer.arm(1, [0.5, 0.5], [torch.arange(4), torch.tensor([1, 0, 3, 2])])
    plain = _outputs([layer], model, x)[0]
    assert torch.equal(_outputs([layer], model, x)[0], plain)  # eval pass: armed but not mixed
    model.train()
    first, second = _outputs([layer], model, x)[0], _outputs([layer], model, x)[0]
    assert _close(first, 0.5 * (second + second[[1, 0, 3, 2]]))  # BatchNorm: same batch stats
    assert mixer.armed is None


def test_mixup_draws_stages_mixes_targets_and_leaves_the_inputs_to_the_hook():
    model, x = _model_and_images("effnet-b0")
    mixer = StageMixer(model)
    mixup = Mixup(alpha=0.4, num_classes=5, k=3, seed=0, stages=mixer)  # Dirichlet weights work the same
    y = torch.arange(4) % 5
    drawn = []
    for _ in range(40):
        x_out, y_out = mixup(x, y)
        stage = mixer.armed or 0
        drawn.append(stage)
        assert torch.allclose(y_out.sum(1), torch.ones(4), atol=1e-6)
        assert torch.equal(x_out, x) == (stage > 0)
        mixer.disarm()
    assert set(drawn) == set(range(len(mixer.stages) + 1))  # the input and every stage get drawn


def test_the_sequence_model_refuses_manifold_mixup():
    model = build_model(ModelConfig(arch="gru", in_chans=4, hidden_size=8, num_layers=1), 5)
    with pytest.raises(ValueError, match="--arch gru reads point sequences"):
        StageMixer(model)
