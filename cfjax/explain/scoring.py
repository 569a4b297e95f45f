"""Scoring saliency maps against ground-truth masks: per-image counts in one jitted pass per batch,
then a summary per method and thresholding.

IoU, Dice and AUROC/AP are computed on images whose mask holds damage; images with an empty mask
are scored apart, by the share of their pixels predicted as damage (false-positive area), and never
enter an IoU.
"""

import jax
import jax.numpy as jnp
import numpy as np

from cfjax.explain import metrics, thresholds

PER_IMAGE_THRESHOLDINGS = ("fixed", "otsu", "top_k")


def score_batch(maps: dict, masks: jnp.ndarray, *, grid: jnp.ndarray, fixed_fraction: float,
                top_k_fraction: float, num_bins: int) -> dict:
    """Per image and method: overlap counts on the threshold grid (for `tuned`) and for each per-image
    thresholding, and a histogram of background / damage pixels by saliency (for AUROC and AP)."""
    out = {"truth": jnp.sum(masks, axis=(1, 2)).astype(jnp.float32),
           "pixels": jnp.full(masks.shape[:1], masks.shape[1] * masks.shape[2], jnp.float32)}
    for name, saliency_map in maps.items():
        out[f"{name}/grid_intersection"], out[f"{name}/grid_union"] = metrics.iou_counts(saliency_map, masks, grid)
        out[f"{name}/grid_predicted"] = jnp.sum(saliency_map[..., None] > grid, axis=(1, 2)).astype(jnp.float32)
        predictions = {
            "fixed": thresholds.fixed_fraction_of_max(saliency_map, fixed_fraction),
            "otsu": thresholds.otsu(saliency_map),
            "top_k": thresholds.top_k(saliency_map, top_k_fraction),
        }
        for thresholding, predicted in predictions.items():
            counts = metrics.overlap_counts(predicted, masks)
            for field in ("intersection", "union", "predicted"):
                out[f"{name}/{thresholding}_{field}"] = counts[field]
        out[f"{name}/histogram"] = jax.vmap(
            lambda s, m: metrics.pixel_histograms(s[None], m[None], jnp.ones(1), num_bins))(saliency_map, masks)
    return out


def _entry(intersection, union, predicted_empty, pixels_empty, threshold=None) -> dict:
    entry = {
        "iou_mean": float(metrics.per_image_iou(intersection, union).mean()) if len(intersection) else None,
        "iou_dataset": float(intersection.sum() / max(union.sum(), 1.0)) if len(intersection) else None,
        "dice_mean": float(metrics.dice(intersection, union).mean()) if len(intersection) else None,
        "fp_area_empty": float((predicted_empty / pixels_empty).mean()) if len(predicted_empty) else None,
    }
    if threshold is not None:
        entry["threshold"] = float(threshold)
    return entry


def damage_rows(scores: dict, has_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows with damage in their mask, rows with an empty mask), among images that carry a mask."""
    has_mask = np.asarray(has_mask, bool)
    return has_mask & (scores["truth"] > 0), has_mask & (scores["truth"] == 0)


def summarize(scores: dict, has_mask: np.ndarray, names: tuple, grid, tuned_on: dict | None = None,
              tuned_has_mask: np.ndarray | None = None) -> dict:
    """{method: {"auroc", "ap", "thresholdings": {name: entry}}}; `tuned` is present when validation
    scores (`tuned_on`) are given: its threshold is the grid value with the best validation IoU."""
    crack, empty = damage_rows(scores, has_mask)
    grid = np.asarray(grid)
    result = {}
    for name in names:
        histogram = scores[f"{name}/histogram"][crack].sum(axis=0)
        summary = {"auroc": metrics.auroc_from_histograms(histogram),
                   "ap": metrics.average_precision_from_histograms(histogram), "thresholdings": {}}
        pixels_empty = scores["pixels"][empty]
        for thresholding in PER_IMAGE_THRESHOLDINGS:
            counts = [scores[f"{name}/{thresholding}_{field}"] for field in ("intersection", "union", "predicted")]
            summary["thresholdings"][thresholding] = _entry(
                counts[0][crack], counts[1][crack], counts[2][empty], pixels_empty)
        if tuned_on is not None:
            val_crack, _ = damage_rows(tuned_on, tuned_has_mask)
            if val_crack.any():
                index = metrics.best_threshold_index(tuned_on[f"{name}/grid_intersection"][val_crack],
                                                     tuned_on[f"{name}/grid_union"][val_crack])
                counts = [scores[f"{name}/grid_{field}"][:, index] for field in ("intersection", "union", "predicted")]
                summary["thresholdings"]["tuned"] = _entry(
                    counts[0][crack], counts[1][crack], counts[2][empty], pixels_empty, threshold=grid[index])
        result[name] = summary
    return result


def per_image_iou(scores: dict, name: str, thresholding: str, tuned_index: int | None = None) -> np.ndarray:
    """Each image's IoU for one method and thresholding (for picking the best and worst cases)."""
    if thresholding == "tuned":
        return metrics.per_image_iou(scores[f"{name}/grid_intersection"][:, tuned_index],
                                     scores[f"{name}/grid_union"][:, tuned_index])
    return metrics.per_image_iou(scores[f"{name}/{thresholding}_intersection"], scores[f"{name}/{thresholding}_union"])
