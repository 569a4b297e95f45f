"""Saliency and IoU against cases small enough to count by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from cfjax.explain import metrics, saliency


def test_iou_counts_by_hand():
    s = jnp.array([[[0.9, 0.2], [0.6, 0.1]]])  # one 2x2 image
    gt = jnp.array([[[1, 0], [0, 1]]], bool)
    inter, union = metrics.iou_counts(s, gt, jnp.array([0.5, 0.95]))
    # tau=0.5: pred {(0,0),(1,0)}; inter 1, union 3. tau=0.95: pred {}; inter 0, union 2.
    np.testing.assert_array_equal(np.asarray(inter), [[1, 0]])
    np.testing.assert_array_equal(np.asarray(union), [[3, 2]])


def test_per_image_and_dataset_iou_differ_as_they_should():
    inter = np.array([[1.0], [9.0]])
    union = np.array([[4.0], [10.0]])
    summary = metrics.iou_summary(inter, union, 0, [0.3])
    assert summary["iou_mean"] == pytest.approx((0.25 + 0.9) / 2)
    assert summary["iou_dataset"] == pytest.approx(10 / 14)
    assert summary["threshold"] == pytest.approx(0.3)


def test_best_threshold_picks_highest_mean_iou():
    inter = np.array([[1.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    union = np.array([[4.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    assert metrics.best_threshold_index(inter, union) == 1


def test_empty_union_counts_as_perfect():
    np.testing.assert_array_equal(metrics.per_image_iou(np.array([0.0]), np.array([0.0])), [1.0])


def test_counterfactual_saliency_reductions():
    x = jnp.zeros((1, 1, 1, 3))
    x_hat = jnp.array([[[[0.3, 0.0, 0.4]]]])
    assert float(saliency.counterfactual_saliency(x, x_hat, "mean")[0, 0, 0]) == pytest.approx(0.7 / 3)
    assert float(saliency.counterfactual_saliency(x, x_hat, "max")[0, 0, 0]) == pytest.approx(0.4)
    assert float(saliency.counterfactual_saliency(x, x_hat, "l2")[0, 0, 0]) == pytest.approx(np.sqrt(0.25 / 3))
    with pytest.raises(ValueError, match="reduction"):
        saliency.counterfactual_saliency(x, x_hat, "median")


def test_local_contrast_lights_up_a_dark_line_only():
    image = np.full((1, 9, 9, 3), 0.8, np.float32)
    image[0, :, 4] = 0.2  # a dark vertical line
    s = np.asarray(saliency.local_contrast_saliency(jnp.asarray(image), radius=1))
    assert s[0, 4, 4] == pytest.approx((0.8 * 6 + 0.2 * 3) / 9 - 0.2, abs=1e-6)
    assert s[0, 4, 0] == pytest.approx(0.0, abs=1e-6)  # flat background far from the line
    dark = np.asarray(saliency.darkness_saliency(jnp.asarray(image)))
    assert dark[0, 4, 4] == pytest.approx(0.8)
