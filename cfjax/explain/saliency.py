"""Per-pixel saliency maps (B, H, W): from a counterfactual, and the trivial baselines."""

import jax
import jax.numpy as jnp

REDUCTIONS = ("mean", "max", "l2")


def counterfactual_saliency(images: jnp.ndarray, counterfactual: jnp.ndarray, reduce: str = "mean") -> jnp.ndarray:
    """s = reduce_c |x - x_hat|: what G had to change to flip the class."""
    diff = jnp.abs(images - counterfactual)
    if reduce == "mean":
        return diff.mean(axis=-1)
    if reduce == "max":
        return diff.max(axis=-1)
    if reduce == "l2":
        return jnp.sqrt((diff**2).mean(axis=-1))
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


def local_contrast_saliency(images: jnp.ndarray, radius: int = 2) -> jnp.ndarray:
    """A classical crack filter (black-hat in spirit): how much darker a pixel is than its surround."""
    brightness = grey(images)
    return jnp.clip(box_blur(brightness, radius) - brightness, 0.0, 1.0)


def smooth(maps: jnp.ndarray, radius: int) -> jnp.ndarray:
    """Optional box blur of a saliency map (radius 0: unchanged): joins the thin, speckled edits
    G makes along a crack into one region before thresholding."""
    return maps if radius <= 0 else box_blur(maps, radius)


def counterfactual_map(images: jnp.ndarray, counterfactual: jnp.ndarray, config) -> jnp.ndarray:
    """The run's counterfactual saliency map: its channel reduction (`saliency.reduce`), then its
    blur (`saliency.blur_radius`); what `--mode=explain` scores and `cfjax.restore(...).saliency` returns."""
    return smooth(counterfactual_saliency(images, counterfactual, config.saliency.reduce),
                  config.saliency.blur_radius)
