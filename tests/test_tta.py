"""Test-time augmentation: the d4 and multiscale variants, and merges that renormalise, one variant at a time."""

import numpy as np
import pytest
import torch

from src.inference.tta import Merge, merge, renormalise, tta_variants
from src.metrics import to_probs
from src.predict import row_blocks
from src.targets import Head, Task

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


@pytest.mark.parametrize("kind", ["single", "multilabel"])
def test_a_merge_one_variant_at_a_time_is_the_merge_of_the_stacked_variants_to_the_bit(kind):
    """`Merge` holds one array, not one per variant (src.predict streams the variants through it, in blocks of
    rows), and gives the numbers of the formulas over the stacked variants."""
    rng = np.random.default_rng(0)
    task = Task(kind, (Head("label", tuple("abcde")),))
    for variants in (1, 2, 3, 8):
        probs = [rng.dirichlet(np.ones(5), 40) ** 2 for _ in range(variants)]
        stack = np.stack(probs)  # (variants, N, num_outputs)
        geometric, highest = np.exp(np.log(np.clip(stack, 1e-15, 1.0)).mean(axis=0)), stack.max(axis=0)
        expected = {
            "mean": stack.mean(axis=0),
            "geometric": geometric if kind == "multilabel" else renormalise(geometric, task),
            "max": highest if kind == "multilabel" else renormalise(highest, task),
        }
        for how, value in expected.items():
            assert np.array_equal(merge(probs, how, task), value)
            merged = Merge(how, task, (40, 5), variants)
            for p in probs:
                for rows in row_blocks(40, size=16):
                    merged.add(p[rows], rows)
            assert np.array_equal(merged.result(), value)
        assert all(np.array_equal(p, q) for p, q in zip(probs, stack))  # the variants are left as they were
    with pytest.raises(ValueError, match="--tta-merge 'median'"):
        Merge("median", task, (40, 5), 2)


@pytest.mark.parametrize("task", [SINGLE, Task("multilabel", (Head("tags", ("a", "b")),)),
                                  Task("multihead", (Head("x", ("0", "1")), Head("y", ("0", "1", "2"))))],
                         ids=["single", "multilabel", "multihead"])
def test_probabilities_of_blocks_of_rows_are_those_of_the_whole_variant(task):
    logits = torch.randn(1000, task.num_outputs, generator=torch.Generator().manual_seed(0)) * 5
    blocks = np.concatenate([to_probs(logits[rows], task) for rows in row_blocks(len(logits), size=64)])
    assert np.array_equal(blocks, to_probs(logits, task))


def test_multiscale_tta_decodes_files_for_its_largest_view():
    """Files are decoded for the largest view (multiscale: 1.125 x the last schedule size), never smaller than
    training reads them."""
    from src.config import Config
    from src.predict import tta_reading

    config = Config.of(img_size=224, img_size_schedule="160:0,224:2")
    assert tta_reading(config, "none").decode_size == 224
    assert tta_reading(config, "flip").decode_size == 224
    assert tta_reading(config, "multiscale").decode_size == 252  # round(224 * 1.125)
