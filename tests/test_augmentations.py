import numpy as np
import pytest
import torch

from src.augmentations import PRESETS, build_transforms


@pytest.mark.parametrize("aug", sorted(PRESETS))
@pytest.mark.parametrize("in_chans", [1, 3, 6])
def test_presets_keep_shape_dtype_and_channels(aug, in_chans):
    image = np.random.default_rng(0).integers(0, 256, (28, 30, in_chans), dtype=np.uint8)
    pipeline = build_transforms(32, [0.5] * in_chans, [0.25] * in_chans, aug=aug, seed=0)
    out = pipeline(image=image)["image"]
    assert out.shape == (in_chans, 32, 32) and out.dtype == torch.float32


def test_eval_pipeline_is_deterministic_and_normalises():
    image = np.full((10, 10, 1), 102, dtype=np.uint8)
    pipeline = build_transforms(16, [0.2], [0.2], aug="none")
    a, b = pipeline(image=image)["image"], pipeline(image=image)["image"]
    assert torch.equal(a, b)
    assert torch.allclose(a, torch.ones_like(a))  # (102 / 255 - 0.2) / 0.2 = 1


def test_light_augmentation_changes_images():
    image = np.zeros((28, 28, 1), dtype=np.uint8)
    image[8:20, 12:16] = 255
    pipeline = build_transforms(28, [0.0], [1.0], aug="light", seed=0)
    outs = [pipeline(image=image)["image"] for _ in range(8)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_unknown_preset_lists_known():
    with pytest.raises(ValueError, match="light"):
        build_transforms(32, [0.5], [0.5], aug="extreme")


def test_pad_mode_keeps_small_images_pixel_exact():
    image = np.zeros((28, 28, 1), dtype=np.uint8)
    image[10:12, 5:9] = 255
    out = build_transforms(32, [0.0], [1.0], aug="none", resize_mode="pad")(image=image)["image"]
    assert out.shape == (1, 32, 32)
    assert torch.equal(out[0, 2:30, 2:30], torch.from_numpy(image[..., 0] / 255.0).float())  # centred, 2 px border
    assert out[0, :2].abs().sum() == 0 and out[0, :, :2].abs().sum() == 0


def test_pad_mode_still_shrinks_large_images():
    image = np.zeros((64, 48, 3), dtype=np.uint8)
    out = build_transforms(32, [0.5] * 3, [0.5] * 3, resize_mode="pad")(image=image)["image"]
    assert out.shape == (3, 32, 32)


def test_unknown_resize_mode_is_named():
    with pytest.raises(ValueError, match="crop"):
        build_transforms(32, [0.5], [0.5], resize_mode="crop")


def test_pipeline_file_replaces_the_preset(tmp_path):
    import albumentations as A

    A.save(A.Compose([A.HorizontalFlip(p=1.0)]), str(tmp_path / "flip.yaml"), data_format="yaml")
    image = np.zeros((8, 8, 1), dtype=np.uint8)
    image[:, :2] = 255  # a bright left edge
    out = build_transforms(8, [0.0], [1.0], aug=str(tmp_path / "flip.yaml"), seed=0)(image=image)["image"]
    assert out[0, :, -2:].min() == 1.0 and out[0, :, :2].max() == 0.0  # flipped to the right edge


def test_bad_pipeline_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        build_transforms(8, [0.0], [1.0], aug=str(tmp_path / "nowhere.yaml"))
    (tmp_path / "bad.json").write_text('{"transform": {"__class_fullname__": "NoSuchTransform", "p": 1}}')
    with pytest.raises(ValueError, match="bad.json: not an albumentations pipeline"):
        build_transforms(8, [0.0], [1.0], aug=str(tmp_path / "bad.json"))
