"""Test-time augmentation: the d4 and multiscale variants, and merges that renormalise."""

import numpy as np

from src.targets import Head, Task
from src.tta import merge, tta_variants

SINGLE = Task("single", (Head("word", ("the sun", "cat", "house")),))


def test_d4_gives_eight_different_views_and_merges_renormalise():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10  # no symmetry
    views = set()
    for variant in tta_variants("d4", 4):
        out = image
        for transform in variant.transforms:
            out = transform(image=out)["image"]
        views.add(out.reshape(4, 4).tobytes())
    assert len(views) == 8
    assert [v.img_size for v in tta_variants("multiscale", 32)] == [32, 28, 36]
    probs = [np.array([[0.8, 0.1, 0.1]]), np.array([[0.2, 0.4, 0.4]])]
    for how in ("mean", "geometric", "max"):
        assert np.allclose(merge(probs, how, SINGLE).sum(axis=1), 1.0)
    assert np.allclose(merge(probs, "geometric", SINGLE), np.array([[0.4, 0.2, 0.2]]) / 0.8)
