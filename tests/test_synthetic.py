"""Tests for the embedded procedural crack dataset (cfjax.data.synthetic)."""

import numpy as np
import pytest
from scipy import ndimage

from cfjax.data import synthetic as S


def _best_global_iou(saliency: np.ndarray, masks: np.ndarray) -> float:
    """Per-image mean IoU at the single threshold (shared by all images) that maximises it."""
    best = 0.0
    for t in np.quantile(saliency, np.linspace(0.5, 0.999, 100)):
        pred = saliency > t
        inter = (pred & masks).sum((1, 2))
        union = (pred | masks).sum((1, 2))
        best = max(best, float(np.mean(inter / np.maximum(union, 1))))
    return best


@pytest.fixture(scope="module")
def crack_images():
    """64 crack-positive 64 px validation images (odd indices are class 1 for K = 2)."""
    d = S.generate_split("validation", 128, seed=0, image_size=64, num_classes=2)
    pos = d["label"] == 1
    assert pos.sum() == 64
    return d["image"][pos], d["mask"][pos]


def test_constants():
    assert S.SPLITS == ("train", "validation", "test")
    for k in (2, 3, 4):
        names = S.class_names(k)
        assert len(names) == k and names[0] == "no_crack"
        assert S.CLASS_NAMES[k] == names
    assert S.CLASS_NAMES[4][:3] == S.CLASS_NAMES[3]


def test_deterministic_and_distinct():
    a = S.generate_example(5, split="train", seed=1)
    b = S.generate_example(5, split="train", seed=1)
    for key in ("image", "mask"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["label"] == b["label"]
    for other in (
        S.generate_example(5, split="test", seed=1),
        S.generate_example(5, split="validation", seed=1),
        S.generate_example(5, split="train", seed=2),
        S.generate_example(7, split="train", seed=1),
    ):
        assert not np.array_equal(a["image"], other["image"])
        assert not np.array_equal(a["mask"], other["mask"])


def test_split_matches_examples_and_chunks():
    whole = S.generate_split("train", 6, seed=3, image_size=32)
    head = S.generate_split("train", 2, seed=3, image_size=32)
    tail = S.generate_split("train", 4, seed=3, image_size=32, start_index=2)
    for key in ("image", "mask", "label"):
        np.testing.assert_array_equal(whole[key], np.concatenate([head[key], tail[key]]))
    ex = S.generate_example(4, split="train", seed=3, image_size=32)
    np.testing.assert_array_equal(whole["image"][4], ex["image"])
    np.testing.assert_array_equal(whole["mask"][4], ex["mask"])
    assert whole["label"][4] == ex["label"]
    empty = S.generate_split("test", 0)
    assert empty["image"].shape == (0, 64, 64, 3) and empty["label"].dtype == np.int32


@pytest.mark.parametrize("size", [16, 32, 64, 100])
def test_shapes_dtypes_range(size):
    d = S.generate_split("test", 4, image_size=size)
    assert d["image"].shape == (4, size, size, 3) and d["image"].dtype == np.float32
    assert d["mask"].shape == (4, size, size) and d["mask"].dtype == np.bool_
    assert d["label"].shape == (4,) and d["label"].dtype == np.int32
    assert np.isfinite(d["image"]).all()
    assert d["image"].min() >= 0.0 and d["image"].max() <= 1.0
    assert d["image"].std() > 0.02  # textured, not flat
    ex = S.generate_example(1, image_size=size)
    assert isinstance(ex["label"], int)
    assert ex["image"].shape == (size, size, 3) and ex["image"].dtype == np.float32


@pytest.mark.parametrize("k", [2, 3, 4])
def test_labels_balanced_and_masks_match(k):
    n = 12 * k
    d = S.generate_split("train", n, seed=0, image_size=48, num_classes=k)
    np.testing.assert_array_equal(d["label"], np.arange(n) % k)
    np.testing.assert_array_equal(np.bincount(d["label"], minlength=k), np.full(k, n // k))
    frac = d["mask"].mean((1, 2))
    assert (frac[d["label"] == 0] == 0).all()
    crack = frac[d["label"] > 0]
    assert (crack > 0.005).all() and (crack < 0.15).all()


def test_crack_fraction_statistics(crack_images):
    _, masks = crack_images
    frac = masks.mean((1, 2))
    assert 0.02 <= frac.mean() <= 0.08, frac.mean()
    assert frac.min() >= 0.01


def test_cracks_darker_than_local_background(crack_images):
    """The darkening follows the mask: crack pixels are darker than a thin ring around them."""
    images, masks = crack_images
    grey = images.mean(-1)
    for g, m in zip(grey, masks):
        ring = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m, iterations=1)
        assert g[m].mean() < 0.95 * g[ring].mean()


def test_crack_types_have_distinct_geometry():
    """K = 4: longitudinal cracks span rows, transverse ones span columns."""
    d = S.generate_split("train", 64, seed=0, image_size=64, num_classes=4)
    rows = d["mask"].any(2).sum(1)
    cols = d["mask"].any(1).sum(1)
    lon, tra = d["label"] == 1, d["label"] == 2
    assert (rows[lon] > cols[lon]).mean() > 0.8
    assert (cols[tra] > rows[tra]).mean() > 0.8


def test_dark_pixels_are_not_a_solution(crack_images):
    """Thresholding darkness must not segment the cracks.

    Bound 0.35: the throwaway prototype's set, which docs/design.md, section 6 calls too easy, scored 0.34
    with dark pixels; a perfect crack remover scores ~0.87 on this set (measured with the
    crack-free rendering of the same images), and the target for a GAN is >= 0.5. Measured
    here: ~0.26.
    """
    images, masks = crack_images
    dark = 1.0 - images.mean(-1)
    assert _best_global_iou(dark, masks) < 0.35


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 5}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"split": "val"}, "split"),
        ({"image_size": 15}, "image_size"),
        ({"image_size": 64.0}, "image_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        S.generate_example(0, **kwargs)
    split = kwargs.pop("split", "train")
    with pytest.raises(ValueError, match=field):
        S.generate_split(split, 2, **kwargs)


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="index"):
        S.generate_example(-1)
    with pytest.raises(ValueError, match="num_examples"):
        S.generate_split("train", -1)
    with pytest.raises(ValueError, match="start_index"):
        S.generate_split("train", 2, start_index=-3)
    with pytest.raises(ValueError, match="num_classes"):
        S.class_names(7)


def test_local_contrast_is_not_a_solution(crack_images):
    """The classical crack filter (blur minus image) must stay clearly below the GAN's target of 0.5."""
    import jax.numpy as jnp

    from cfjax.masks.maps import local_contrast_saliency

    images, masks = crack_images
    contrast = np.asarray(local_contrast_saliency(jnp.asarray(images), radius=2))
    assert _best_global_iou(contrast, masks) < 0.45
