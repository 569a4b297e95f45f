"""Scoring saliency maps against ground-truth masks: per-image counts in one jitted pass per batch,
then a summary per method and thresholding. Training's evaluation (the `tuned` threshold only) and
`--mode=explain` (every thresholding, AUROC and AP) both score through here, so one map gets one number.

IoU, Dice and AUROC/AP are computed on images whose mask holds damage; images with an empty mask
are scored apart, by the share of their pixels predicted as damage (false-positive area), and never
enter an IoU.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cfjax.masks import metrics, thresholds

PER_IMAGE_THRESHOLDINGS = ("fixed", "otsu", "top_k")


@dataclasses.dataclass(frozen=True)
class PerImageRules:
    """The thresholdings that need no validation split: a fraction of each image's peak, and top-k."""

    fixed_fraction: float
    top_k_fraction: float


def score_batch(maps: dict, masks: jnp.ndarray, *, grid: jnp.ndarray, per_image: PerImageRules | None = None,
                num_bins: int | None = None) -> dict:
    """Per image and method: overlap counts on the threshold grid (for `tuned`); with `per_image`, the
    counts of each per-image thresholding; with `num_bins`, a histogram of background / damage pixels by
    saliency (for AUROC and AP)."""
    out = {"truth": jnp.sum(masks, axis=(1, 2)).astype(jnp.float32),
           "pixels": jnp.full(masks.shape[:1], masks.shape[1] * masks.shape[2], jnp.float32)}
    for name, saliency_map in maps.items():
        out[f"{name}/grid_intersection"], out[f"{name}/grid_union"] = metrics.iou_counts(saliency_map, masks, grid)
        out[f"{name}/grid_predicted"] = jnp.sum(saliency_map[..., None] > grid, axis=(1, 2)).astype(jnp.float32)
        if per_image is not None:
            predictions = {
                "fixed": thresholds.fixed_fraction_of_max(saliency_map, per_image.fixed_fraction),
                "otsu": thresholds.otsu(saliency_map),
                "top_k": thresholds.top_k(saliency_map, per_image.top_k_fraction),
            }
            for thresholding, predicted in predictions.items():
                counts = metrics.overlap_counts(predicted, masks)
                for field in ("intersection", "union", "predicted"):
                    out[f"{name}/{thresholding}_{field}"] = counts[field]
        if num_bins is not None:
            out[f"{name}/histogram"] = jax.vmap(
                lambda s, m: metrics.pixel_histograms(s[None], m[None], jnp.ones(1), num_bins))(saliency_map, masks)
    return out


def method_names(scores: dict) -> tuple:
    """The methods `score_batch` scored, in their order."""
    return tuple(key.removesuffix("/grid_intersection") for key in scores if key.endswith("/grid_intersection"))


def _entry(intersection, union, predicted_empty, pixels_empty, threshold=None) -> dict:
    entry = {
        "iou_mean": float(metrics.per_image_iou(intersection, union).mean()) if len(intersection) else None,
        "iou_dataset": float(intersection.sum() / max(union.sum(), 1.0)) if len(intersection) else None,
        "dice_mean": float(metrics.dice(intersection, union).mean()) if len(intersection) else None,
        "fp_area_empty": float((predicted_empty / pixels_empty).mean()) if len(predicted_empty) else None,
        "num_images": int(len(intersection)),
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
    scores (`tuned_on`) are given: its threshold is the grid value with the best validation IoU. AUROC,
    AP and the per-image thresholdings are there when `score_batch` counted them."""
    crack, empty = damage_rows(scores, has_mask)
    grid = np.asarray(grid)
    result = {}
    for name in names:
        summary = {"thresholdings": {}}
        if f"{name}/histogram" in scores:
            histogram = scores[f"{name}/histogram"][crack].sum(axis=0)
            summary.update(auroc=metrics.auroc_from_histograms(histogram),
                           ap=metrics.average_precision_from_histograms(histogram))
        pixels_empty = scores["pixels"][empty]
        for thresholding in (t for t in PER_IMAGE_THRESHOLDINGS if f"{name}/{t}_intersection" in scores):
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
