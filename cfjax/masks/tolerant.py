"""The crack literature's scores with a distance tolerance, beside strict IoU (docs/explaining.md,
"Tolerant scores"). Hand-traced crack annotations are a few pixels wide and a pixel or two off, so the
field forgives small offsets:

* tolerant F1 (ODS / OIS, as in FPHBN's `crack_eval.m`): a predicted pixel is correct when a ground-truth
  pixel lies within Euclidean distance d; a ground-truth pixel is found when a predicted pixel lies within
  d. Counted per image on the whole threshold grid, in the same jitted pass as the IoU counts;
* clIoU (OmniCrack30k): IoU of the skeletons of prediction and ground truth, each dilated by a disk of
  radius d, pooled over images (`centerline_counts`, on one binary mask per image).

Dilation by a disk is a max filter with a disk footprint: the disk is a union of a few rectangles, each a
`lax.reduce_window` max over a padded map, so it is jittable and batched.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def disk_footprint(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) bool: the offsets (dy, dx) with dy^2 + dx^2 <= r^2."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def _disk_rectangles(radius: int) -> list[tuple[int, int]]:
    """Half-sizes (a, b) of rectangles [-a, a] x [-b, b] whose union is the disk footprint; a rectangle
    inside the next one is left out."""
    half_widths = [int(np.floor(np.sqrt(radius**2 - a**2) + 1e-9)) for a in range(radius + 1)]
    return [(a, b) for a, b in enumerate(half_widths) if a == radius or b > half_widths[a + 1]]


def disk_max_filter(maps: jnp.ndarray, radius: int) -> jnp.ndarray:
    """Each pixel of (B, H, W) maps replaced by the largest value within Euclidean distance `radius`
    (outside the image counts as -inf). radius 0: unchanged."""
    if radius <= 0:
        return maps
    maps = maps.astype(jnp.float32)
    filtered = [jax.lax.reduce_window(maps, -jnp.inf, jax.lax.max, (1, 2 * a + 1, 2 * b + 1), (1, 1, 1),
                                      ((0, 0), (a, a), (b, b)))
                for a, b in _disk_rectangles(radius)]
    return functools.reduce(jnp.maximum, filtered)


def dilate(binary: jnp.ndarray, radius: int) -> jnp.ndarray:
    """Binary (B, H, W) masks dilated by a disk of `radius`: every pixel within that distance of a true one."""
    return disk_max_filter(binary.astype(jnp.float32), radius) > 0.5


def tolerant_counts(saliency: jnp.ndarray, masks: jnp.ndarray, thresholds: jnp.ndarray, radius: int):
    """Per image and threshold, with pred = saliency > tau (shapes (B, T)):
    matched = |{p in pred : a ground-truth pixel within `radius` of p}|,
    found = |{g in gt : a predicted pixel within `radius` of g}|.

    Neither needs a dilation per threshold: `matched` counts pred inside the dilated ground truth, and a
    ground-truth pixel is found at tau exactly when the largest saliency within `radius` exceeds tau."""
    truth = masks.astype(bool)
    near_truth = dilate(truth, radius)[..., None]
    predicted = saliency[..., None] > thresholds
    matched = jnp.sum(predicted & near_truth, axis=(1, 2))
    nearest_saliency = disk_max_filter(saliency, radius)
    found = jnp.sum((nearest_saliency[..., None] > thresholds) & truth[..., None], axis=(1, 2))
    return matched.astype(jnp.float32), found.astype(jnp.float32)


def f1_from_counts(matched, predicted, found, truth) -> np.ndarray:
    """Tolerant F1 = 2PR / (P + R), P = matched / predicted, R = found / truth (arrays broadcast); P is 0
    when nothing is predicted, R is 0 when nothing is true, F1 is 0 when P + R = 0."""
    matched, predicted, found, truth = (np.asarray(a, np.float64) for a in (matched, predicted, found, truth))
    precision = np.where(predicted > 0, matched / np.maximum(predicted, 1), 0.0)
    recall = np.where(truth > 0, found / np.maximum(truth, 1), 0.0)
    total = precision + recall
    return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1.0), 0.0)


def pooled_f1(matched, predicted, found, truth) -> np.ndarray:
    """(T,) F1 per threshold from counts summed over images, (N, T) / (N, T) / (N, T) / (N,): the ODS curve."""
    return f1_from_counts(np.sum(matched, axis=0), np.sum(predicted, axis=0), np.sum(found, axis=0),
                          np.sum(truth))


def ods_index(matched, predicted, found, truth) -> int:
    """The grid threshold with the best pooled F1 (ODS: one threshold for a whole split)."""
    return int(np.argmax(pooled_f1(matched, predicted, found, truth)))


def ois_f1(matched, predicted, found, truth) -> float:
    """OIS: each image at its own best threshold, F1 averaged over images."""
    per_image = f1_from_counts(matched, predicted, found, np.asarray(truth)[:, None])
    return float(per_image.max(axis=1).mean())


def precision_recall(matched, predicted, found, truth) -> tuple[float, float]:
    """Pooled tolerant precision and recall of counts summed over images (at one threshold)."""
    matched, predicted, found, truth = (float(np.sum(a)) for a in (matched, predicted, found, truth))
    return (matched / predicted if predicted > 0 else 0.0), (found / truth if truth > 0 else 0.0)
