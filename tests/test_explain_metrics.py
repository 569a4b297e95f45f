"""Saliency and IoU against cases small enough to count by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfjax.masks import maps as saliency
from cfjax.masks import metrics


def test_iou_counts_by_hand():
    s = jnp.array([[[0.9, 0.2], [0.6, 0.1]]])  # one 2x2 image
    gt = jnp.array([[[1, 0], [0, 1]]], bool)
    inter, union = metrics.iou_counts(s, gt, jnp.array([0.5, 0.95]))
    # tau=0.5: pred {(0,0),(1,0)}; inter 1, union 3. tau=0.95: pred {}; inter 0, union 2.
    np.testing.assert_array_equal(np.asarray(inter), [[1, 0]])
    np.testing.assert_array_equal(np.asarray(union), [[3, 2]])


def test_per_image_and_dataset_iou_differ_as_they_should():
    from cfjax.masks import scoring

    scores = {"truth": np.array([2.0, 9.0]), "pixels": np.array([16.0, 16.0]),
              "m/grid_intersection": np.array([[1.0], [9.0]]), "m/grid_union": np.array([[4.0], [10.0]]),
              "m/grid_predicted": np.array([[3.0], [10.0]])}
    has_mask = np.ones(2, bool)
    entry = scoring.summarize(scores, has_mask, ("m",), [0.3], scores, has_mask)["m"]["thresholdings"]["tuned"]
    assert entry["iou_mean"] == pytest.approx((0.25 + 0.9) / 2)
    assert entry["iou_dataset"] == pytest.approx(10 / 14)
    assert entry["threshold"] == pytest.approx(0.3)


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


def _views(name: str, **fields):
    import ml_collections

    return ml_collections.ConfigDict({"reduce": "mean", "blur_radius": 0, "views": name, **fields})


@pytest.mark.parametrize("index", range(8))
def test_each_view_is_turned_back_exactly_on_a_non_square_image(index):
    image = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5, 1)
    view = saliency._view(image, index)
    assert view.shape == ((2, 5, 3, 1) if index & 4 else image.shape)
    np.testing.assert_array_equal(saliency._unview(view[..., 0], index), image[..., 0])
    assert len({tuple(np.asarray(saliency._view(image, i)).ravel()) for i in range(8)}) == 8  # 8 distinct views


def test_views_leave_an_equivariant_generator_alone_and_return_its_own_outputs():
    """An edit that commutes with flips and transpositions gives the same map from every view."""
    image = jax.random.uniform(jax.random.PRNGKey(0), (2, 6, 4, 3))
    darken = lambda x, t: (x * 0.5, t.astype(jnp.float32))  # (x_hat, "head logits")
    targets = jnp.array([0, 1])
    single = saliency.counterfactual_map(image, image * 0.5, _views("identity"))
    for name in saliency.VIEWS:
        (x_hat, head), averaged = saliency.averaged_counterfactual_map(darken, image, targets, _views(name))
        np.testing.assert_allclose(averaged, single, atol=1e-6)
        np.testing.assert_array_equal(x_hat, image * 0.5)
        np.testing.assert_array_equal(head, [0.0, 1.0])


def test_views_average_an_edit_that_follows_the_view_by_hand():
    """G that always edits the top-left pixel of what it sees: each view's edit lands on another corner
    of the image, so the average spreads one edit of 1 over the corners the views reach."""
    def corner(x, t):
        return x.at[:, 0, 0, :].add(1.0), t

    image = jnp.zeros((1, 4, 4, 1))
    targets = jnp.zeros((1,), jnp.int32)
    (x_hat, _), flips = saliency.averaged_counterfactual_map(corner, image, targets, _views("flips"))
    np.testing.assert_array_equal(x_hat[0, ..., 0], np.eye(4)[0][:, None] * np.eye(4)[0][None, :])
    expected = np.zeros((4, 4))
    expected[[0, 0, 3, 3], [0, 3, 0, 3]] = 0.25  # the 4 flips reach the 4 corners once each
    np.testing.assert_allclose(flips[0], expected)
    _, dihedral = saliency.averaged_counterfactual_map(corner, image, targets, _views("dihedral"))
    np.testing.assert_allclose(dihedral[0], expected)  # a transposition keeps each corner a corner


def test_local_contrast_lights_up_a_dark_line_only():
    image = np.full((1, 9, 9, 3), 0.8, np.float32)
    image[0, :, 4] = 0.2  # a dark vertical line
    s = np.asarray(saliency.local_contrast_saliency(jnp.asarray(image), radius=1))
    assert s[0, 4, 4] == pytest.approx((0.8 * 6 + 0.2 * 3) / 9 - 0.2, abs=1e-6)
    assert s[0, 4, 0] == pytest.approx(0.0, abs=1e-6)  # flat background far from the line
    dark = np.asarray(saliency.darkness_saliency(jnp.asarray(image)))
    assert dark[0, 4, 4] == pytest.approx(0.8)


# --- thresholdings -------------------------------------------------------------------------------

from cfjax.masks import thresholds  # noqa: E402


def test_fixed_fraction_of_max_is_relative_to_each_image():
    s = jnp.array([[[0.2, 0.1], [0.05, 0.0]], [[1.0, 0.6], [0.4, 0.0]]])
    np.testing.assert_array_equal(np.asarray(thresholds.fixed_fraction_of_max(s, 0.5)),
                                  [[[True, False], [False, False]], [[True, True], [False, False]]])
    assert not np.asarray(thresholds.fixed_fraction_of_max(jnp.zeros((1, 2, 2)), 0.5)).any()


def test_otsu_splits_a_bimodal_image_between_its_modes():
    s = np.full((1, 8, 8), 0.1, np.float32)
    s[0, 2:4, :] = 0.9
    s[0, 0, 0] = 0.15  # noise in the low mode
    tau = float(thresholds.otsu_threshold(jnp.asarray(s))[0])
    assert 0.15 < tau < 0.9
    np.testing.assert_array_equal(np.asarray(thresholds.otsu(jnp.asarray(s)))[0], s[0] >= 0.9)


def test_otsu_of_a_constant_map_predicts_nothing():
    assert not np.asarray(thresholds.otsu(jnp.full((2, 4, 4), 0.3))).any()


def test_top_k_keeps_the_k_percent_most_salient_pixels():
    s = jnp.arange(16.0).reshape(1, 4, 4) / 16
    predicted = np.asarray(thresholds.top_k(s, 0.25))
    assert predicted.sum() == 4 and predicted[0, 3].all()  # the last row holds the 4 largest
    assert np.asarray(thresholds.top_k(s, 0.01)).sum() == 1  # at least one pixel


def test_above_accepts_one_threshold_per_image():
    s = jnp.array([[[0.2, 0.6]], [[0.2, 0.6]]])
    np.testing.assert_array_equal(np.asarray(thresholds.above(s, jnp.array([0.1, 0.5]))),
                                  [[[True, True]], [[False, True]]])


# --- overlap, Dice, AUROC, AP --------------------------------------------------------------------

def test_overlap_counts_and_dice_by_hand():
    pred = jnp.array([[[1, 1], [0, 0]]], bool)
    gt = jnp.array([[[1, 0], [1, 0]]], bool)
    counts = {k: float(v[0]) for k, v in metrics.overlap_counts(pred, gt).items()}
    assert counts == {"intersection": 1.0, "union": 3.0, "predicted": 2.0, "truth": 2.0}
    assert metrics.dice(np.array([1.0]), np.array([3.0]))[0] == pytest.approx(2 * 1 / (2 + 2))
    assert metrics.dice(np.array([0.0]), np.array([0.0]))[0] == 1.0  # nothing predicted, nothing true


def _histograms(scores, labels, bins=10):
    s = jnp.asarray(np.array(scores, np.float32).reshape(1, 1, -1))
    m = jnp.asarray(np.array(labels, bool).reshape(1, 1, -1))
    return np.asarray(metrics.pixel_histograms(s, m, jnp.ones(1), bins))


def test_auroc_and_average_precision_by_hand():
    # Ranked by score: + - + -. AUROC: of the 4 (pos, neg) pairs, 3 are ordered right. AP: (1/1 + 2/3) / 2.
    h = _histograms([0.95, 0.85, 0.35, 0.15], [1, 0, 1, 0])
    assert metrics.auroc_from_histograms(h) == pytest.approx(0.75)
    assert metrics.average_precision_from_histograms(h) == pytest.approx((1 + 2 / 3) / 2)


def test_auroc_counts_ties_as_half_and_perfect_ranking_as_one():
    assert metrics.auroc_from_histograms(_histograms([0.55, 0.55], [1, 0])) == pytest.approx(0.5)
    assert metrics.auroc_from_histograms(_histograms([0.9, 0.8, 0.1], [1, 1, 0])) == pytest.approx(1.0)
    assert metrics.average_precision_from_histograms(_histograms([0.9, 0.8, 0.1], [1, 1, 0])) == pytest.approx(1.0)
    assert np.isnan(metrics.auroc_from_histograms(_histograms([0.9], [1])))  # no negatives: undefined


def test_pixel_histograms_ignore_zero_weight_images():
    s = jnp.full((2, 1, 2), 0.5)
    m = jnp.array([[[1, 0]], [[1, 1]]], bool)
    h = np.asarray(metrics.pixel_histograms(s, m, jnp.array([1.0, 0.0]), 4))
    np.testing.assert_array_equal(h, [[0, 0, 1, 0], [0, 0, 1, 0]])


# --- scoring: damaged images get IoU, empty ones a false-positive area ----------------------------

from cfjax.masks import scoring  # noqa: E402


def _score(maps, masks, grid=(0.0, 0.5, 1.0)):
    return jax.tree.map(np.asarray, scoring.score_batch(
        {"m": jnp.asarray(maps, jnp.float32)}, jnp.asarray(masks, bool), grid=jnp.asarray(grid),
        per_image=scoring.PerImageRules(fixed_fraction=0.5, top_k_fraction=0.25), num_bins=8))


def test_empty_ground_truth_is_reported_apart_never_in_iou():
    maps = np.zeros((2, 2, 2), np.float32)
    maps[0, 0, 0] = 0.9  # image 0: damage at (0, 0), predicted exactly
    maps[1, 1, 1] = 0.9  # image 1: no damage, one pixel predicted: a false positive on 1/4 of it
    masks = np.zeros((2, 2, 2), bool)
    masks[0, 0, 0] = True
    scores = _score(maps, masks)
    scores["has_mask"] = np.ones(2, bool)
    summary = scoring.summarize(scores, scores["has_mask"], ("m",), [0.0, 0.5, 1.0], tuned_on=scores,
                                tuned_has_mask=scores["has_mask"])["m"]
    for name in ("fixed", "otsu", "top_k", "tuned"):
        entry = summary["thresholdings"][name]
        assert entry["iou_mean"] == pytest.approx(1.0), name
        assert entry["fp_area_empty"] == pytest.approx(0.25), name
    assert summary["thresholdings"]["tuned"]["threshold"] == pytest.approx(0.0)  # first of the best (0 and 0.5)
    assert summary["auroc"] == pytest.approx(1.0)


def test_tuned_threshold_comes_from_validation_not_test():
    masks = np.zeros((1, 2, 2), bool)
    masks[0, 0] = True
    val = _score(np.array([[[0.9, 0.9], [0.3, 0.3]]]), masks)  # best validation tau: 0.5
    test = _score(np.array([[[0.4, 0.4], [0.1, 0.1]]]), masks)  # best test tau would be 0.0
    for d in (val, test):
        d["has_mask"] = np.ones(1, bool)
    entry = scoring.summarize(test, test["has_mask"], ("m",), [0.0, 0.5, 1.0], tuned_on=val,
                              tuned_has_mask=val["has_mask"])["m"]["thresholdings"]["tuned"]
    assert entry["threshold"] == pytest.approx(0.5)
    assert entry["iou_mean"] == pytest.approx(0.0)  # frozen at 0.5, nothing on test is above it


def test_without_validation_there_is_no_tuned_entry():
    masks = np.ones((1, 2, 2), bool)
    scores = _score(np.full((1, 2, 2), 0.7), masks)
    summary = scoring.summarize(scores, np.ones(1, bool), ("m",), [0.0, 0.5, 1.0])["m"]
    assert "tuned" not in summary["thresholdings"]
    assert summary["thresholdings"]["otsu"]["fp_area_empty"] is None  # no empty images to score
