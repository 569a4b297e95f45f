"""How `cfjax.restore`'s methods read images by dtype (the rule in cfjax/restored_run.py's docstring and
docs/training.md): floats in [0, 1] as they are; uint8 as 0..255, divided by 255; bool and other integer
dtypes refused; a uint8 array whose values are only 0 and 1 (a mask?) refused as ambiguous. No run is
needed: the checks come before any computation."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cfjax.restored_run import RestoredRun

SIZE = 4


@pytest.fixture
def run() -> RestoredRun:
    restored = object.__new__(RestoredRun)  # only what _images reads: the run's resolution
    restored.config = ml_collections.ConfigDict({"data": {"image_size": SIZE}})
    return restored


def test_float_images_in_the_unit_interval_are_read_as_they_are(run):
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3))
    for dtype in (np.float16, np.float32, np.float64, jnp.bfloat16):
        batch, single = run._images(np.asarray(images).astype(dtype))
        assert batch.dtype == np.float32 and not single
        np.testing.assert_allclose(batch, images, atol=1e-2)
    batch, single = run._images(jnp.asarray(images[0], jnp.float32))
    assert single and batch.shape == (1, SIZE, SIZE, 3)


def test_uint8_images_are_divided_by_255(run):
    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3)).astype(np.uint8)
    batch, _ = run._images(images)
    np.testing.assert_array_equal(batch, images.astype(np.float32) / 255)


def test_a_uint8_zero_one_array_is_refused_as_ambiguous(run):
    mask_like = np.random.default_rng(0).integers(0, 2, (2, SIZE, SIZE, 3)).astype(np.uint8)
    with pytest.raises(ValueError, match=r"uint8 with values only in \{0, 1\}: ambiguous, this looks like a 0/1 mask"):
        run._images(mask_like)


@pytest.mark.parametrize("dtype", [bool, np.int8, np.int32, np.int64, np.uint16])
def test_bool_and_other_integer_images_are_refused(run, dtype):
    with pytest.raises(ValueError, match=rf"images of dtype {np.dtype(dtype)} are refused: pass float images in "
                                         r"\[0, 1\], or uint8 images in 0..255"):
        run._images(np.ones((1, SIZE, SIZE, 3), dtype))


def test_floats_outside_the_unit_interval_are_still_refused(run):
    with pytest.raises(ValueError, match=r"must be finite and in \[0, 1\] \(divide 8-bit images by 255\)"):
        run._images(np.full((1, SIZE, SIZE, 3), 255.0))
