"""Scoring saliency maps against ground-truth masks: per-image counts in one jitted pass per batch,
then a summary per method and thresholding. Training's evaluation (the `tuned` threshold only) and
`--mode=explain` (every thresholding, AUROC and AP) both score through here, so one map gets one number.

IoU, Dice and AUROC/AP are computed on images whose mask holds damage; images with an empty mask
are scored apart, by the share of their pixels predicted as damage (false-positive area), and never
enter an IoU. `--mode=explain` also counts the crack literature's tolerant scores (`masks.tolerant`:
tolerant F1 as ODS / OIS on the grid, clIoU at the frozen threshold), on the same damaged images.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cfjax.masks import centerline, metrics, thresholds, tolerant

PER_IMAGE_THRESHOLDINGS = ("fixed", "otsu", "top_k")


@dataclasses.dataclass(frozen=True)
class PerImageRules:
    """The thresholdings that need no validation split: a fraction of each image's peak, and top-k."""

    fixed_fraction: float
    top_k_fraction: float


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Distance tolerances in pixels: tolerant F1's (`f1`) and clIoU's (`centerline`)."""

    f1: int
    centerline: int


def score_batch(maps: dict, masks: jnp.ndarray, *, grid: jnp.ndarray, per_image: PerImageRules | None = None,
                num_bins: int | None = None, tolerances: Tolerances | None = None,
                frozen: dict | None = None) -> dict:
    """Per image and method: overlap counts on the threshold grid (for `tuned`); with `per_image`, the
    counts of each per-image thresholding; with `num_bins`, a histogram of background / damage pixels by
    saliency (for AUROC and AP); with `tolerances`, the tolerant-F1 counts on the grid, and with `frozen`
    ({method: the threshold `tuned` froze}) as well, clIoU's counts at that threshold."""
    out = {"truth": jnp.sum(masks, axis=(1, 2)).astype(jnp.float32),
           "pixels": jnp.full(masks.shape[:1], masks.shape[1] * masks.shape[2], jnp.float32)}
    for name, saliency_map in maps.items():
        out[f"{name}/grid_intersection"], out[f"{name}/grid_union"] = metrics.iou_counts(saliency_map, masks, grid)
        out[f"{name}/grid_predicted"] = jnp.sum(saliency_map[..., None] > grid, axis=(1, 2)).astype(jnp.float32)
        if tolerances is not None:
            out[f"{name}/grid_matched"], out[f"{name}/grid_found"] = tolerant.tolerant_counts(
                saliency_map, masks, grid, tolerances.f1)
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
    if tolerances is not None and frozen:
        out.update(_centerline_counts(maps, masks, frozen, tolerances.centerline))
    return out


def _centerline_counts(maps: dict, masks: jnp.ndarray, frozen: dict, radius: int) -> dict:
    """clIoU's counts of every method in `frozen` at its threshold. The true and all predicted masks are
    thinned as one batch: one loop to compile and run, not one per method."""
    names = [name for name in maps if name in frozen]
    stacked = jnp.concatenate([masks.astype(bool)] + [maps[name] > frozen[name] for name in names])
    bands = centerline.centerline_band(stacked, radius).reshape((len(names) + 1,) + masks.shape)
    out = {}
    for index, name in enumerate(names):
        counts = centerline.band_overlap(bands[index + 1], bands[0])
        out[f"{name}/tuned_cl_intersection"], out[f"{name}/tuned_cl_union"] = (counts["cl_intersection"],
                                                                              counts["cl_union"])
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
    """{method: {"auroc", "ap", "thresholdings": {name: entry}, "tolerant", "validation"}}; `tuned` (and
    `validation`, the validation scores at their best) is present when validation scores (`tuned_on`) are
    given: its threshold is the grid value with the best validation IoU. AUROC, AP, the per-image
    thresholdings, `tolerant` (tolerant F1: ODS, OIS) and the tuned clIoU are there when `score_batch`
    counted them."""
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
        val_crack = damage_rows(tuned_on, tuned_has_mask)[0] if tuned_on is not None else None
        if val_crack is not None and val_crack.any():
            index = _tuned_index(tuned_on, val_crack, name)
            counts = [scores[f"{name}/grid_{field}"][:, index] for field in ("intersection", "union", "predicted")]
            entry = _entry(counts[0][crack], counts[1][crack], counts[2][empty], pixels_empty, threshold=grid[index])
            if f"{name}/tuned_cl_intersection" in scores and crack.any():
                entry["cliou"] = float(scores[f"{name}/tuned_cl_intersection"][crack].sum()
                                       / max(scores[f"{name}/tuned_cl_union"][crack].sum(), 1.0))
            summary["thresholdings"]["tuned"] = entry
            summary["validation"] = _validation_entry(tuned_on, val_crack, name)
        else:
            val_crack = None
        if f"{name}/grid_matched" in scores and crack.any():
            summary["tolerant"] = _tolerant_entry(scores, crack, name, grid, tuned_on, val_crack)
        result[name] = summary
    return result


def _tuned_index(tuned_on: dict, val_crack: np.ndarray, name: str) -> int:
    return metrics.best_threshold_index(tuned_on[f"{name}/grid_intersection"][val_crack],
                                        tuned_on[f"{name}/grid_union"][val_crack])


def tuned_thresholds(tuned_on: dict, tuned_has_mask: np.ndarray, names: tuple, grid) -> dict:
    """{method: the `tuned` threshold summarize picks on `tuned_on`} (empty without damaged images there):
    what a test pass needs to count clIoU at the frozen threshold."""
    val_crack, _ = damage_rows(tuned_on, tuned_has_mask)
    if not val_crack.any():
        return {}
    return {name: float(np.asarray(grid)[_tuned_index(tuned_on, val_crack, name)]) for name in names}


def _tolerant_counts(scores: dict, rows: np.ndarray, name: str) -> tuple:
    return (scores[f"{name}/grid_matched"][rows], scores[f"{name}/grid_predicted"][rows],
            scores[f"{name}/grid_found"][rows], scores["truth"][rows])


def _tolerant_entry(scores: dict, crack: np.ndarray, name: str, grid: np.ndarray, tuned_on: dict | None,
                    val_crack: np.ndarray | None) -> dict:
    """Tolerant F1 over the damaged images: OIS, the test-optimal ODS (an oracle), and, with validation
    scores, the honest ODS at the threshold validation chose."""
    counts = _tolerant_counts(scores, crack, name)
    curve = tolerant.pooled_f1(*counts)
    oracle = int(np.argmax(curve))
    entry = {"ois_f1": tolerant.ois_f1(*counts), "ods_oracle_f1": float(curve[oracle]),
             "ods_oracle_threshold": float(grid[oracle])}
    if val_crack is not None and f"{name}/grid_matched" in tuned_on:
        index = tolerant.ods_index(*_tolerant_counts(tuned_on, val_crack, name))
        precision, recall = tolerant.precision_recall(*(c[:, index] if c.ndim == 2 else c for c in counts))
        entry.update(ods_f1=float(curve[index]), ods_threshold=float(grid[index]), ods_precision=precision,
                     ods_recall=recall)
    return entry


def _validation_entry(tuned_on: dict, val_crack: np.ndarray, name: str) -> dict:
    """The validation scores a thin-mask option is chosen by: per-image IoU at the tuned threshold, and
    the best pooled tolerant F1 when it was counted."""
    iou = metrics.per_image_iou(tuned_on[f"{name}/grid_intersection"][val_crack],
                                tuned_on[f"{name}/grid_union"][val_crack]).mean(axis=0)
    entry = {"iou_mean": float(iou.max())}
    if f"{name}/grid_matched" in tuned_on:
        entry["ods_f1"] = float(tolerant.pooled_f1(*_tolerant_counts(tuned_on, val_crack, name)).max())
    return entry


def per_image_iou(scores: dict, name: str, thresholding: str, tuned_index: int | None = None) -> np.ndarray:
    """Each image's IoU for one method and thresholding (for picking the best and worst cases)."""
    if thresholding == "tuned":
        return metrics.per_image_iou(scores[f"{name}/grid_intersection"][:, tuned_index],
                                     scores[f"{name}/grid_union"][:, tuned_index])
    return metrics.per_image_iou(scores[f"{name}/{thresholding}_intersection"], scores[f"{name}/{thresholding}_union"])
