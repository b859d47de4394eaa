"""The model registry: every arch's forward shapes, pretrained weights and input adaptation, heads, output
stride, the GRU."""

import subprocess
import sys

import pytest
import torch
from efficientnet_pytorch import EfficientNet
from torch import nn

import src.model
from src.config import ModelConfig
from src.layers.backbones import GRUBackbone, adapt_input_conv
from src.model import ARCHS, MIN_INPUT, SEQUENCE_ARCHS, build_model, check_shapes, list_archs
from src.train import main as train_main
from tests.helpers import TINY, assert_refused


def _build(arch: str, num_classes, **fields):
    return build_model(ModelConfig(arch=arch, **fields), num_classes)


def test_gru_output_does_not_depend_on_the_padding():
    torch.manual_seed(0)
    backbone = GRUBackbone(in_chans=4, hidden_size=8, num_layers=2).eval()
    points = torch.cat([torch.randn(1, 3, 3), torch.ones(1, 3, 1)], dim=2)  # 3 real points
    short = torch.cat([points, torch.zeros(1, 2, 4)], dim=1)
    long = torch.cat([points, torch.zeros(1, 7, 4)], dim=1)
    out = backbone(short)
    assert out.shape == (1, 8, 1, 1)
    assert torch.allclose(out, backbone(long), atol=1e-6)
    model = _build("gru", 5, in_chans=4, hidden_size=8, num_layers=1)
    assert model(long.repeat(2, 1, 1)).shape == (2, 5)


def test_model_with_heads_outputs_the_heads_side_by_side():
    model = _build("effnet-b0", num_classes=[168, 11, 7], in_chans=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 186)
    assert [h.out_features for h in model.fc.heads] == [168, 11, 7]


FAST_ARCHS = {"effnet-b0", "effnet-b3", "se_resnext50_32x4d", "densenet121", "resnet18", "xception", "inceptionv4"}


ZOO = [
    a if a in FAST_ARCHS else pytest.param(a, marks=pytest.mark.slow) for a in list_archs() if a not in SEQUENCE_ARCHS
]


@pytest.mark.parametrize("arch", ZOO)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_shapes(arch, in_chans):
    model = _build(arch, num_classes=7, in_chans=in_chans).eval()
    size = MIN_INPUT.get(arch, 32)
    x = torch.randn(2, in_chans, size, size)  # (N, C, H, W)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
    assert logits.shape == (2, 7)
    assert features.shape == (2, model.num_features)
    assert torch.isfinite(logits).all()


def test_registry_has_required_archs():
    required = {f"effnet-b{i}" for i in range(8)} | {"se_resnext50_32x4d", "se_resnext101_32x4d", "senet154"}
    required |= {"densenet121", "densenet161", "densenet169", "densenet201", "resnext101_32x4d", "inceptionv4"}
    required |= {"xception"}
    assert required <= set(ARCHS)


def test_unknown_arch_lists_known_names():
    with pytest.raises(ValueError) as info:
        _build("nope", num_classes=10)
    message = str(info.value)
    assert "'nope'" in message and "effnet-b0" in message and "densenet121" in message


def test_effnet_batchnorm_momentum_is_pytorch_default():
    model = _build("effnet-b0", num_classes=10, in_chans=1)
    momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(momenta) == 1 and momenta.pop() == pytest.approx(0.1)


def _stem(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def test_adapt_input_conv_one_channel_sums_rgb():
    conv_net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False))
    rgb_weight = conv_net[0].weight.detach().clone()
    grey = torch.rand(1, 1, 8, 8)
    expected = nn.functional.conv2d(grey.expand(1, 3, 8, 8), rgb_weight)
    adapt_input_conv(conv_net, 1)
    assert conv_net[0].weight.shape == (4, 1, 3, 3)
    assert torch.allclose(conv_net(grey), expected, atol=1e-6)


@pytest.mark.parametrize("in_chans", [2, 4, 6])
def test_adapt_input_conv_many_channels_keeps_constant_image_response(in_chans):
    conv_net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False))
    rgb_response = conv_net(torch.full((1, 3, 8, 8), 0.5))
    adapt_input_conv(conv_net, in_chans)
    assert conv_net[0].in_channels == in_chans
    assert torch.allclose(conv_net(torch.full((1, in_chans, 8, 8), 0.5)), rgb_response, atol=1e-5)


def test_pretrained_path_of_library_weights_is_loaded_and_adapted(tmp_path):
    torch.manual_seed(0)
    reference = EfficientNet.from_name("efficientnet-b0", image_size=None, batch_norm_momentum=0.9)
    path = tmp_path / "efficientnet-b0-imagenet.pth"
    torch.save(reference.state_dict(), path)
    model = _build("effnet-b0", num_classes=5, in_chans=1, pretrained=str(path))
    assert torch.equal(model.backbone.net._blocks[3]._project_conv.weight, reference._blocks[3]._project_conv.weight)
    assert torch.allclose(_stem(model).weight, reference._conv_stem.weight.sum(1, keepdim=True))


def test_pretrained_path_of_own_checkpoint_round_trips(tmp_path):
    model = _build("densenet121", num_classes=4, in_chans=1)
    path = tmp_path / "best_model.pt"
    torch.save(model.state_dict(), path)
    loaded = _build("densenet121", num_classes=4, in_chans=1, pretrained=str(path))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_pretrained_path_missing_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        _build("effnet-b0", num_classes=3, pretrained=str(tmp_path / "missing.pth"))


def test_pretrained_path_of_other_arch_is_rejected(tmp_path):
    path = tmp_path / "densenet.pth"
    torch.save(_build("densenet121", num_classes=3).state_dict(), path)
    with pytest.raises(ValueError, match="densenet.pth"):
        _build("effnet-b0", num_classes=3, pretrained=str(path))


def test_one_shape_check_for_checkpoints_and_weights_files():
    own = nn.Linear(4, 3).state_dict()
    check_shapes({"weight": torch.zeros(3, 4)}, own, "w.pt", complete=False)  # a weights file may lack a tensor
    with pytest.raises(ValueError, match="the checkpoint has no tensor 'bias'"):
        check_shapes({"weight": torch.zeros(3, 4)}, own, "the checkpoint")
    wider = {"weight": torch.zeros(5, 4), "bias": torch.zeros(5)}
    with pytest.raises(ValueError, match=r"'weight' is \(5, 4\) there and \(3, 4\) here"):
        check_shapes(wider, own, "the checkpoint")
    with pytest.raises(ValueError, match=r"w.pt does not fit this model: 'weight' is \(5, 4\) in the file and"):
        check_shapes(wider, own, "w.pt", complete=False, sides=("in the file", "in the model"))


def test_describe_archs_counts_parameters_and_names_the_smallest_input():
    from src.model import describe_archs

    effnet, inception = describe_archs(["effnet-b0", "inceptionv4"])
    assert effnet.split()[:2] == ["effnet-b0", "5.3M"] and "input >= 32 px" in effnet  # 5.29M with 1000 classes
    assert inception.startswith("inceptionv4") and "input >= 75 px" in inception


def test_models_do_not_share_modules_between_builds():
    # pretrainedmodels' resnext101_32x4d builds every instance on one module-level `features` object
    grey = _build("resnext101_32x4d", num_classes=3, in_chans=1)
    colour = _build("resnext101_32x4d", num_classes=3, in_chans=3).eval()
    with torch.no_grad():
        assert colour(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert grey.backbone.net.features[0].in_channels == 1


def test_bn_dropout_head_normalises_the_embedding(tmp_path):
    model = _build("effnet-b0", num_classes=4, in_chans=1, head="bn-dropout", drop_rate=0.3)
    assert isinstance(model.head_norm, nn.BatchNorm1d) and model.dropout.p == 0.3
    model.train()
    model(torch.randn(4, 1, 32, 32))
    assert model.head_norm.num_batches_tracked.item() == 1  # the head's BatchNorm sees the embeddings
    torch.save(_build("effnet-b0", num_classes=4, in_chans=1).state_dict(), tmp_path / "linear.pt")
    reloaded = _build("effnet-b0", num_classes=4, in_chans=1, head="bn-dropout", pretrained=str(tmp_path / "linear.pt"))
    assert reloaded.head_norm.num_batches_tracked.item() == 0  # a new head on the loaded backbone
    with pytest.raises(ValueError, match="--head 'mlp'"):
        _build("effnet-b0", num_classes=4, in_chans=1, head="mlp")


@pytest.mark.parametrize("arch", ["effnet-b0", "resnet18", "se_resnext50_32x4d"])
def test_output_stride_keeps_a_larger_final_map_with_the_same_weights(arch):
    x = torch.randn(2, 1, 64, 64)
    models = {s: _build(arch, num_classes=3, in_chans=1, output_stride=s).eval() for s in (32, 16, 8)}
    with torch.no_grad():
        sides = {stride: model.backbone(x).shape[-1] for stride, model in models.items()}
        models[16].load_state_dict(models[32].state_dict())  # same parameters: any weights load
        assert models[16](x).shape == (2, 3)
    assert sides == {32: 2, 16: 4, 8: 8}


@pytest.mark.parametrize("arch", ["densenet121", "gru"])
def test_output_stride_unsupported_arch_says_which_are(arch):
    with pytest.raises(ValueError, match=f"--output-stride 16: not supported for --arch {arch}.*EfficientNets"):
        _build(arch, num_classes=3, in_chans=4, output_stride=16)


def test_the_same_seed_builds_the_same_weights_from_the_first_build_of_a_process_on():
    # pretrainedmodels builds modules when imported: its first import (inside the first build) must not move the
    # seed, or a process's first run (and fold 0 of --fold all) would start from other weights than a later one
    code = """
import torch
from ignite.utils import manual_seed
from src.config import ModelConfig
from src.model import build_model
sums = []
for _ in range(2):
    manual_seed(42)
    sums.append(next(build_model(ModelConfig(arch="resnet18", in_chans=1), 10).parameters()).sum().item())
print(sums[0] == sums[1])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "True"


def test_an_imagenet_download_that_fails_is_one_line_exit_2_and_writes_nothing(monkeypatch, capsys, tmp_path):
    def offline(config):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(src.model.ARCHS, "resnet18", offline)
    argv = [*TINY, "--arch", "resnet18", "--pretrained", "imagenet", "--output-dir", str(tmp_path)]
    line = assert_refused(capsys, train_main, argv, tmp_path, "could not download the ImageNet weights of resnet18")
    assert "--pretrained PATH" in line and "Temporary failure in name resolution" in line
