"""Per-pixel saliency maps (B, H, W) in [0, 1]: the counterfactual map and the trivial baselines.

The counterfactual map's settings all live in one config section, `config.saliency` (`reduce`,
`blur_radius`); `counterfactual_map` is the only place that turns (x, x_hat) into a map.
"""

import jax
import jax.numpy as jnp
import ml_collections

# The class without damage ("no crack", "healthy"): counterfactuals toward it show where the damage is,
# and masks are scored on images of the other classes.
NORMAL_CLASS = 0

REDUCTIONS = ("mean", "max", "l2", "min")


def counterfactual_saliency(images: jnp.ndarray, counterfactual: jnp.ndarray, reduce: str) -> jnp.ndarray:
    """s = reduce_c |x - x_hat|: what G had to change to flip the class."""
    diff = jnp.abs(images - counterfactual)
    if reduce == "mean":
        return diff.mean(axis=-1)
    if reduce == "max":
        return diff.max(axis=-1)
    if reduce == "l2":
        return jnp.sqrt((diff**2).mean(axis=-1))
    if reduce == "min":  # the sharpest: a pixel counts as much as its least-changed channel
        return diff.min(axis=-1)
    raise ValueError(f"saliency reduction must be one of {REDUCTIONS}, got {reduce!r}")


def grey(images: jnp.ndarray) -> jnp.ndarray:
    """Channel mean, the brightness every darkness baseline works on."""
    return images.mean(axis=-1)


def darkness_saliency(images: jnp.ndarray) -> jnp.ndarray:
    """The "dark pixels" baseline: cracks are dark, so 1 - brightness."""
    return 1.0 - grey(images)


def box_blur(maps: jnp.ndarray, radius: int) -> jnp.ndarray:
    """Mean over a (2r+1)^2 window with edge padding, on (B, H, W) maps."""
    size = 2 * radius + 1
    padded = jnp.pad(maps, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    summed = jax.lax.reduce_window(padded, 0.0, jax.lax.add, (1, size, size), (1, 1, 1), "VALID")
    return summed / (size * size)


def local_contrast_saliency(images: jnp.ndarray, radius: int) -> jnp.ndarray:
    """A classical crack filter (black-hat in spirit): how much darker a pixel is than its surround."""
    brightness = grey(images)
    return jnp.clip(box_blur(brightness, radius) - brightness, 0.0, 1.0)


def smooth(maps: jnp.ndarray, radius: int) -> jnp.ndarray:
    """Optional box blur of a saliency map (radius 0: unchanged): joins the thin, speckled edits
    G makes along a crack into one region before thresholding."""
    return maps if radius <= 0 else box_blur(maps, radius)


def counterfactual_map(images: jnp.ndarray, counterfactual: jnp.ndarray,
                       settings: ml_collections.ConfigDict) -> jnp.ndarray:
    """The run's counterfactual saliency map: the channel reduction `settings.reduce`, then the blur
    `settings.blur_radius` (`settings` is `config.saliency`)."""
    return smooth(counterfactual_saliency(images, counterfactual, settings.reduce), settings.blur_radius)


def baseline_maps(images: jnp.ndarray, settings: ml_collections.ConfigDict) -> dict:
    """The trivial baselines every mask table shows beside the learned maps (docs/design.md, section 6)."""
    return {"dark_pixels": darkness_saliency(images),
            "local_contrast": local_contrast_saliency(images, settings.contrast_radius)}


def explained_classes(class_logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """The class each attribution explains: the label when it is a damaged class, else the most likely
    damaged class (for normal images and unknown labels, -1: "where would the damage be?")."""
    is_normal = jnp.arange(class_logits.shape[-1]) == NORMAL_CLASS
    likeliest_damage = jnp.argmax(jnp.where(is_normal, -jnp.inf, class_logits), axis=-1)
    damaged = (labels >= 0) & (labels != NORMAL_CLASS)
    return jnp.where(damaged, labels, likeliest_damage).astype(jnp.int32)
