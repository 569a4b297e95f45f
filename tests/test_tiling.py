"""`cfjax.tiling`: overlapping tiles blended by a Hann window, and the seam measure that shows why."""

import jax
import numpy as np
import pytest

from cfjax import parallel, tiling


def _identity(tiles):
    return {"image": tiles, "mean": tiles.mean(axis=(1, 2))}


@pytest.mark.parametrize("shape", [(100, 70), (32, 32), (5, 3), (1, 40), (129, 64)])
@pytest.mark.parametrize("overlap", [True, False])
def test_blending_an_identity_gives_the_photo_back_and_one_row_per_tile(shape, overlap):
    image = np.random.default_rng(0).random(shape + (3,), np.float32)
    layout = tiling.Layout.of(shape, 32, overlap=overlap)
    out = tiling.apply(_identity, image, layout, batch_size=7)
    np.testing.assert_allclose(out["image"], image, atol=1e-6)
    assert out["mean"].shape == (layout.count, 3)


def test_windows_add_to_one_so_a_constant_tile_output_is_a_constant_photo():
    layout = tiling.Layout.of((150, 97), 32)
    out = tiling.apply(lambda t: {"c": np.full(t.shape[:3], 0.7, np.float32)}, np.zeros((150, 97, 3)), layout,
                       batch_size=16)
    np.testing.assert_allclose(out["c"], 0.7, atol=1e-6)
    # and inside the padded photo the windows of the overlapping tiles already sum to 1 (no division needed)
    blender = tiling.Blender(layout)
    blender.add(np.zeros((layout.count, 32, 32)), range(layout.count))
    (top, _), (left, _) = layout.pad
    np.testing.assert_allclose(blender.weight[top:top + 150, left:left + 97], 1.0, atol=1e-6)


def test_seam_measure_scores_a_step_at_every_border_high_and_a_smooth_map_near_one():
    rng = np.random.default_rng(0)
    steps = np.kron(rng.random((4, 4)), np.ones((32, 32))) + 0.01 * rng.random((128, 128))
    assert tiling.seam_measure(steps, 32) > 20
    y, x = np.mgrid[:128, :128]
    assert tiling.seam_measure(0.003 * x + 0.002 * y, 32) == pytest.approx(1.0)
    noise = rng.random((130, 130))
    smooth = sum(np.roll(np.roll(noise, i, 0), j, 1) for i in range(5) for j in range(5))[:128, :128]
    assert 0.8 < tiling.seam_measure(smooth, 32) < 1.25
    assert 0.8 < tiling.seam_measure(rng.random((128, 128, 3)), 32) < 1.2
    assert np.isnan(tiling.seam_measure(np.ones((20, 20)), 32))  # no border inside


def test_blended_tiles_hide_a_per_tile_offset_the_non_overlapping_cut_shows():
    """A tile function that re-tones each tile (adds an offset of its own, as G does on low-contrast
    photos): cut without overlap the photo steps at every tile border; blended, the steps fade out."""
    y, x = np.mgrid[:256, :320]
    photo = np.stack([0.5 + 0.2 * np.sin(x / 9.0) * np.cos(y / 13.0)] * 3, -1).astype(np.float32)
    rng = np.random.default_rng(1)

    def retone(tiles):
        offsets = rng.uniform(-0.1, 0.1, (len(tiles), 1, 1))
        return {"map": tiles.mean(-1) + offsets}

    before = tiling.apply(retone, photo, tiling.Layout.of(photo.shape[:2], 32, overlap=False), batch_size=64)
    after = tiling.apply(retone, photo, tiling.Layout.of(photo.shape[:2], 32), batch_size=64)
    assert tiling.seam_measure(before["map"], 32) > 5
    assert tiling.seam_measure(after["map"], 32) < 1.3


def test_on_mesh_batches_tiles_over_the_devices():
    mesh = parallel.make_mesh()
    batch = 4 * jax.device_count()
    fn = tiling.on_mesh(lambda params, x: {"map": x.mean(-1) * params, "logit": x.sum((1, 2, 3))}, 2.0, mesh, batch)
    image = np.random.default_rng(2).random((70, 50, 3), np.float32)
    layout = tiling.Layout.of(image.shape[:2], 16)
    out = tiling.apply(fn, image, layout, batch_size=batch)
    np.testing.assert_allclose(out["map"], 2 * image.mean(-1), atol=1e-5)
    assert out["logit"].shape == (layout.count,)
    assert layout.weights_inside().shape == (layout.count,)
