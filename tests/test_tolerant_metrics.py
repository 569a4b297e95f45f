"""The crack literature's tolerant scores (tolerant F1 as ODS / OIS, clIoU) and the thin-mask options,
on cases small enough to count by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from cfjax.masks import centerline, metrics, scoring, thin, tolerant

GRID = (0.0, 0.5)


def _line(size=16, row=8, width=1):
    mask = np.zeros((size, size), bool)
    mask[row - width // 2:row - width // 2 + width, 2:size - 2] = True
    return mask


def _scores(maps, masks, grid=GRID, frozen=None):
    scores = jax.tree.map(np.asarray, scoring.score_batch(
        {"m": jnp.asarray(np.asarray(maps), jnp.float32)}, jnp.asarray(np.asarray(masks), bool),
        grid=jnp.asarray(grid), tolerances=scoring.Tolerances(f1=2, centerline=4), frozen=frozen))
    scores["has_mask"] = np.ones(len(masks), bool)
    return scores


def _summary(test, val=None, grid=GRID):
    return scoring.summarize(test, test["has_mask"], ("m",), grid, val,
                             None if val is None else val["has_mask"])["m"]


# --- the disk footprint and dilation --------------------------------------------------------------

def test_disk_footprint_is_the_euclidean_disk():
    assert tolerant.disk_footprint(0).sum() == 1
    assert tolerant.disk_footprint(1).sum() == 5  # the 4-neighbourhood: diagonals lie at sqrt 2 > 1
    disk = tolerant.disk_footprint(2)
    assert disk.sum() == 13 and disk[2, 0] and disk[1, 1] and not disk[0, 0] and not disk[0, 1]
    assert tolerant.disk_footprint(4).sum() == 49


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 5])
def test_disk_max_filter_matches_a_max_filter_with_the_disk_footprint(radius):
    maps = np.random.default_rng(radius).random((2, 13, 17)).astype(np.float32)
    ours = np.asarray(tolerant.disk_max_filter(jnp.asarray(maps), radius))
    reference = ndimage.maximum_filter(maps, footprint=tolerant.disk_footprint(radius)[None], mode="constant",
                                       cval=-np.inf)
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("radius", [2, 4])
def test_dilating_one_pixel_draws_the_footprint(radius):
    point = np.zeros((1, 15, 15), bool)
    point[0, 7, 7] = True
    dilated = np.asarray(tolerant.dilate(jnp.asarray(point), radius))[0]
    np.testing.assert_array_equal(dilated[7 - radius:8 + radius, 7 - radius:8 + radius],
                                  tolerant.disk_footprint(radius))
    assert dilated.sum() == tolerant.disk_footprint(radius).sum()


# --- tolerant F1 ------------------------------------------------------------------------------------

def _tolerant_f1(prediction, truth, radius=2):
    matched, found = tolerant.tolerant_counts(jnp.asarray(prediction[None], jnp.float32),
                                              jnp.asarray(truth[None]), jnp.asarray([0.5]), radius)
    return float(tolerant.f1_from_counts(matched, prediction.sum(), found, truth.sum())[0, 0])


def test_a_line_one_pixel_off_is_wrong_for_iou_and_right_within_the_tolerance():
    truth, prediction = _line(row=8), _line(row=9)
    intersection, union = metrics.iou_counts(jnp.asarray(prediction[None], jnp.float32), jnp.asarray(truth[None]),
                                             jnp.asarray([0.5]))
    assert float(metrics.per_image_iou(intersection, union)[0, 0]) == 0.0
    assert _tolerant_f1(prediction, truth) == pytest.approx(1.0)
    assert _tolerant_f1(_line(row=10), truth) == pytest.approx(1.0)  # 2 px off: still within d = 2


def test_a_line_three_pixels_off_scores_zero_at_a_tolerance_of_two():
    assert _tolerant_f1(_line(row=11), _line(row=8)) == 0.0
    assert _tolerant_f1(_line(row=11), _line(row=8), radius=3) == pytest.approx(1.0)


def test_tolerant_precision_and_recall_count_each_side():
    truth = _line(row=8)  # 12 pixels
    prediction = _line(row=8) | _line(row=14)  # the line, and a second one 6 px away
    matched, found = tolerant.tolerant_counts(jnp.asarray(prediction[None], jnp.float32), jnp.asarray(truth[None]),
                                              jnp.asarray([0.5]), 2)
    assert float(matched[0, 0]) == 12 and float(found[0, 0]) == 12  # precision 1/2, recall 1
    assert _tolerant_f1(prediction, truth) == pytest.approx(2 * 0.5 / 1.5)


def test_empty_prediction_or_truth_scores_zero():
    assert _tolerant_f1(np.zeros((16, 16), bool), _line()) == 0.0
    assert float(tolerant.f1_from_counts(0, 0, 0, 0)) == 0.0
    assert float(tolerant.f1_from_counts(5, 5, 0, 0)) == 0.0  # precision without anything to find


def _two_images():
    """Image A is best at tau 0.5 (its background is 0.3), image B at tau 0 (its line is only 0.3)."""
    truth = np.stack([_line(), _line()])
    a = np.where(_line(), 0.8, 0.3)
    b = np.where(_line(), 0.3, 0.0)
    return np.stack([a, b]), truth


def test_ods_pools_one_threshold_and_ois_takes_each_images_best():
    maps, truth = _two_images()
    summary = _summary(_scores(maps, truth))["tolerant"]
    assert summary["ois_f1"] == pytest.approx(1.0)
    # tau 0: A predicts all 256 pixels, 68 within 2 px of its 12-pixel line (rows of 16, 14, 14, 12, 12);
    # B predicts its 12 exactly. tau 0.5: A exact, B nothing.
    f1_at_0 = 2 * (80 / 268) / (80 / 268 + 1)
    f1_at_half = 2 * 1.0 * 0.5 / 1.5
    assert summary["ods_oracle_f1"] == pytest.approx(max(f1_at_0, f1_at_half))
    assert summary["ods_oracle_threshold"] == 0.5
    assert "ods_f1" not in summary  # nothing to choose it on without validation


def test_ods_threshold_comes_from_validation_and_the_oracle_from_test():
    maps, truth = _two_images()
    test = _scores(maps, truth)
    val = _scores(maps[1:], truth[1:])  # validation prefers tau 0
    summary = _summary(test, val)
    tolerant_scores = summary["tolerant"]
    assert tolerant_scores["ods_threshold"] == 0.0
    assert tolerant_scores["ods_f1"] == pytest.approx(2 * (80 / 268) / (80 / 268 + 1))
    assert tolerant_scores["ods_precision"] == pytest.approx(80 / 268) and tolerant_scores["ods_recall"] == 1.0
    assert tolerant_scores["ods_oracle_threshold"] == 0.5 and tolerant_scores["ods_oracle_f1"] > tolerant_scores[
        "ods_f1"]
    assert summary["validation"]["ods_f1"] == pytest.approx(1.0)


def test_images_without_damage_never_enter_tolerant_scores():
    maps, truth = _two_images()
    with_empty = _scores(np.concatenate([maps, np.full((1, 16, 16), 0.9)]),
                         np.concatenate([truth, np.zeros((1, 16, 16), bool)]))
    assert _summary(with_empty)["tolerant"] == _summary(_scores(maps, truth))["tolerant"]
    assert "tolerant" not in _summary(_scores(np.full((1, 4, 4), 0.9), np.zeros((1, 4, 4), bool)))


# --- skeletons and clIoU --------------------------------------------------------------------------

def _skeleton(mask):
    return np.asarray(centerline.skeletonize(jnp.asarray(mask[None])))[0]


def test_a_thick_line_thins_to_its_centre_row():
    skeleton = _skeleton(_line(size=24, row=12, width=5))
    assert np.flatnonzero(skeleton.any(axis=1)).tolist() == [12]
    assert skeleton.sum() >= 20 - 2 * 3  # a 20-px line; Zhang-Suen shortens each end by about half the width


def test_thinning_keeps_small_components_and_empty_masks():
    block = np.zeros((6, 6), bool)
    block[2:4, 2:4] = True  # plain Zhang-Suen would delete all four pixels
    assert _skeleton(block).sum() >= 1
    point = np.zeros((5, 5), bool)
    point[2, 2] = True
    np.testing.assert_array_equal(_skeleton(point), point)
    assert not _skeleton(np.zeros((5, 5), bool)).any()
    line = _line()
    np.testing.assert_array_equal(_skeleton(line), line)  # already one pixel wide


def test_a_diagonal_stroke_thins_to_one_connected_line():
    y, x = np.mgrid[0:20, 0:20]
    stroke = np.abs(y - x) <= 1
    skeleton = _skeleton(stroke)
    assert skeleton.sum() >= 14 and ndimage.label(skeleton, structure=np.ones((3, 3)))[1] == 1
    assert np.abs(np.argwhere(skeleton) @ np.array([1, -1])).max() <= 1  # on the diagonal


def test_cliou_of_a_thick_and_a_thin_mask_of_one_line_is_about_one():
    thick, thin_line = _line(size=64, row=32, width=5), _line(size=64, row=32, width=1)
    strict = (thick & thin_line).sum() / (thick | thin_line).sum()
    band = centerline.centerline_band(jnp.asarray(thin_line[None]), 4)
    counts = centerline.centerline_counts(jnp.asarray(thick[None]), band, 4)
    cliou = float(counts["cl_intersection"][0] / counts["cl_union"][0])
    # Not exactly 1: thinning shortens the thick line's skeleton by 2-3 px at each end (60 px long here).
    assert strict == pytest.approx(0.2) and cliou > 0.9
    same = centerline.centerline_counts(jnp.asarray(thin_line[None]), band, 4)
    assert float(same["cl_intersection"][0]) == float(same["cl_union"][0])


def test_cliou_is_counted_at_the_frozen_threshold_and_pooled_over_images():
    truth = np.stack([_line(row=8, width=3), _line(row=8)])
    maps = np.stack([np.where(_line(row=8, width=3), 0.9, 0.0), np.zeros((16, 16))])  # B: nothing predicted
    scores = _scores(maps, truth, frozen={"m": jnp.float32(0.0)})  # what tuning picks: both taus tie
    entry = _summary(scores, scores)["thresholdings"]["tuned"]
    assert entry["threshold"] == 0.0
    intersection, union = scores["m/tuned_cl_intersection"], scores["m/tuned_cl_union"]
    assert intersection[1] == 0 and union[1] > 0 and intersection[0] == union[0]
    assert entry["cliou"] == pytest.approx(union[0] / union.sum())
    assert "m/tuned_cl_intersection" not in _scores(maps, truth)  # no frozen threshold, no clIoU


# --- thin-mask options ------------------------------------------------------------------------------

def _nms(ridge):
    return np.asarray(thin.ridge_nms(jnp.asarray(ridge[None], jnp.float32)))[0]


def test_nms_keeps_one_pixel_across_a_horizontal_and_a_diagonal_ridge():
    y, x = np.mgrid[0:24, 0:24]
    horizontal = _nms(np.exp(-((y - 12.0) ** 2) / 4))
    assert np.flatnonzero(horizontal.any(axis=1)).tolist() == [12]
    diagonal = _nms(np.exp(-((y - x) ** 2) / 8.0))
    assert (diagonal > 0).sum(axis=0).tolist() == [1] * 24 and np.all(np.diag(diagonal) > 0)
    kept = np.exp(-((y - 12.0) ** 2) / 4)
    np.testing.assert_allclose(horizontal[12], kept[12])  # kept pixels keep their own saliency


def test_sharp_reduction_counts_the_least_changed_channel():
    images = jnp.zeros((1, 1, 2, 3))
    counterfactual = jnp.asarray([[[[0.6, 0.6, 0.6], [0.9, 0.0, 0.0]]]])
    variant = thin.variant_maps({"counterfactual": jnp.zeros((1, 1, 2))}, "counterfactual", images,
                                counterfactual, _explain_config(nms=False, reduce="min"))
    np.testing.assert_allclose(variant["counterfactual_min"], [[[0.6, 0.0]]])


def _explain_config(nms, reduce):
    import ml_collections
    return ml_collections.ConfigDict({"explain": {"thin_nms": nms, "thin_reduce": reduce}})


def test_variant_names_follow_the_options():
    config = _explain_config(nms=True, reduce="min")
    assert thin.variant_names("counterfactual", True, config.explain) == ("counterfactual_nms", "counterfactual_min")
    assert thin.variant_names("segmenter", False, config.explain) == ("segmenter_nms",)
    assert thin.variant_names("segmenter", False, _explain_config(False, "").explain) == ()
