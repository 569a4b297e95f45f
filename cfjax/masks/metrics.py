"""IoU of thresholded saliency against ground-truth masks, for a whole grid of thresholds at once.

Counting intersections and unions per image and per threshold lets one pass over the data serve
threshold tuning on validation and the frozen-threshold score on test.
"""

import jax.numpy as jnp
import numpy as np


def threshold_grid(num_thresholds: int) -> jnp.ndarray:
    """Thresholds evenly spaced over [0, 1], the range of every saliency map here."""
    return jnp.linspace(0.0, 1.0, num_thresholds)


def iou_counts(saliency: jnp.ndarray, masks: jnp.ndarray, thresholds: jnp.ndarray):
    """Per image and threshold: |pred ∩ gt| and |pred ∪ gt| with pred = saliency > tau. Shapes (B, T)."""
    predicted = saliency[..., None] > thresholds
    truth = masks.astype(bool)[..., None]
    intersection = jnp.sum(predicted & truth, axis=(1, 2))
    union = jnp.sum(predicted | truth, axis=(1, 2))
    return intersection.astype(jnp.float32), union.astype(jnp.float32)


def per_image_iou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """IoU per image and threshold; an empty union (nothing predicted, nothing true) counts as 1."""
    intersection, union = np.asarray(intersection), np.asarray(union)
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def best_threshold_index(intersection: np.ndarray, union: np.ndarray) -> int:
    """The threshold with the highest per-image mean IoU (tuned on validation, then frozen)."""
    return int(np.argmax(per_image_iou(intersection, union).mean(axis=0)))


def overlap_counts(predicted: jnp.ndarray, masks: jnp.ndarray) -> dict:
    """Per image: |pred ∩ gt|, |pred ∪ gt|, |pred| and |gt| of binary (B, H, W) masks."""
    predicted, truth = predicted.astype(bool), masks.astype(bool)
    count = lambda a: jnp.sum(a, axis=(1, 2)).astype(jnp.float32)
    return {"intersection": count(predicted & truth), "union": count(predicted | truth),
            "predicted": count(predicted), "truth": count(truth)}


def dice(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Dice / F1 per image from IoU counts: 2|A∩B| / (|A| + |B|) = 2I / (I + U); empty vs empty is 1."""
    intersection, union = np.asarray(intersection), np.asarray(union)
    total = intersection + union
    return np.where(total > 0, 2 * intersection / np.maximum(total, 1), 1.0)


def pixel_histograms(saliency: jnp.ndarray, masks: jnp.ndarray, weights: jnp.ndarray, num_bins: int) -> jnp.ndarray:
    """(2, num_bins) counts of background (row 0) and crack (row 1) pixels per saliency bin on [0, 1],
    over the images with weight 1: summed over batches, they give AUROC and AP of the raw saliency."""
    index = jnp.clip((saliency * num_bins).astype(jnp.int32), 0, num_bins - 1).reshape(-1)
    truth = masks.astype(jnp.int32).reshape(-1)
    pixel_weight = jnp.broadcast_to(weights[:, None, None], saliency.shape).reshape(-1).astype(jnp.float32)
    return jnp.zeros((2, num_bins), jnp.float32).at[truth, index].add(pixel_weight)


def auroc_from_histograms(histograms: np.ndarray) -> float:
    """Area under the ROC curve of pixels ranked by saliency bin (ties within a bin count one half)."""
    negative, positive = (np.asarray(h, np.float64) for h in histograms)
    if positive.sum() == 0 or negative.sum() == 0:
        return float("nan")
    negatives_below = np.cumsum(negative) - negative
    wins = positive * (negatives_below + 0.5 * negative)
    return float(wins.sum() / (positive.sum() * negative.sum()))


def average_precision_from_histograms(histograms: np.ndarray) -> float:
    """Average precision: precision at each bin threshold (from the top), weighted by the recall it adds."""
    negative, positive = (np.asarray(h, np.float64)[::-1] for h in histograms)
    if positive.sum() == 0:
        return float("nan")
    true_positives, predicted = np.cumsum(positive), np.cumsum(positive + negative)
    precision = np.where(predicted > 0, true_positives / np.maximum(predicted, 1), 0.0)
    return float((precision * positive).sum() / positive.sum())
