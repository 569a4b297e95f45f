"""Binarising saliency maps (B, H, W) into predicted masks, four ways, all jittable and batched:

* `fixed`:  s > tau * max(s), a fixed fraction of each image's peak (the same rule for every method,
            whatever its scale);
* `otsu`:   per-image Otsu threshold (maximal between-class variance of a histogram);
* `tuned`:  s > tau with tau chosen on the validation split (see `metrics.best_threshold_index`),
            then frozen for test;
* `top_k`:  the k% most salient pixels of each image (threshold-free: a reference for ranking quality).
"""

import jax
import jax.numpy as jnp

THRESHOLDINGS = ("fixed", "otsu", "tuned", "top_k")


def fixed_fraction_of_max(saliency: jnp.ndarray, fraction: float) -> jnp.ndarray:
    """Pixels above `fraction` of their image's maximum; an all-zero map predicts nothing."""
    peak = saliency.max(axis=(1, 2), keepdims=True)
    return (saliency > fraction * peak) & (peak > 0)


def above(saliency: jnp.ndarray, threshold) -> jnp.ndarray:
    """Pixels strictly above a threshold (a scalar, or one per image of shape (B,))."""
    threshold = jnp.asarray(threshold, saliency.dtype)
    return saliency > threshold.reshape(threshold.shape + (1,) * (saliency.ndim - threshold.ndim))


def otsu_threshold(saliency: jnp.ndarray, num_bins: int = 256) -> jnp.ndarray:
    """Per-image Otsu threshold (B,): the bin edge between each image's min and max that maximises
    the between-class variance w0 * w1 * (mu0 - mu1)^2 of the histogram."""
    flat = saliency.reshape(saliency.shape[0], -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    width = jnp.maximum(high - low, 1e-12) / num_bins
    index = jnp.clip(((flat - low[:, None]) / width[:, None]).astype(jnp.int32), 0, num_bins - 1)
    counts = jax.vmap(lambda i: jnp.bincount(i, length=num_bins))(index).astype(jnp.float32)
    centres = low[:, None] + (jnp.arange(num_bins) + 0.5) * width[:, None]
    weight_low = jnp.cumsum(counts, axis=1)  # pixels at or below each bin
    mass_low = jnp.cumsum(counts * centres, axis=1)
    total, total_mass = weight_low[:, -1:], mass_low[:, -1:]
    weight_high = total - weight_low
    mean_low = mass_low / jnp.maximum(weight_low, 1e-12)
    mean_high = (total_mass - mass_low) / jnp.maximum(weight_high, 1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    best = jnp.argmax(between[:, :-1], axis=1)  # the split after bin `best`
    return low + (best + 1) * width


def otsu(saliency: jnp.ndarray, num_bins: int = 256) -> jnp.ndarray:
    """Pixels above each image's Otsu threshold; a constant map predicts nothing."""
    flat = saliency.reshape(saliency.shape[0], -1)
    constant = (flat.max(axis=1) - flat.min(axis=1)) <= 0
    return above(saliency, otsu_threshold(saliency, num_bins)) & ~constant[:, None, None]


def top_k(saliency: jnp.ndarray, fraction: float) -> jnp.ndarray:
    """Each image's ceil(fraction * pixels) most salient pixels (ties at the cut all included)."""
    flat = saliency.reshape(saliency.shape[0], -1)
    k = max(1, int(-(-fraction * flat.shape[1] // 1)))
    kth = jax.lax.top_k(flat, k)[0][:, -1]
    return saliency >= kth[:, None, None]
