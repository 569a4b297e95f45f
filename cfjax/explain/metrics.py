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


def iou_summary(intersection: np.ndarray, union: np.ndarray, index: int, thresholds) -> dict:
    """Per-image mean IoU and dataset-level IoU (sum of intersections over sum of unions) at one threshold."""
    inter, uni = np.asarray(intersection)[:, index], np.asarray(union)[:, index]
    return {
        "threshold": float(np.asarray(thresholds)[index]),
        "iou_mean": float(per_image_iou(inter, uni).mean()),
        "iou_dataset": float(inter.sum() / max(uni.sum(), 1.0)),
        "num_images": int(inter.shape[0]),
    }
