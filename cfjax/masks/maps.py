"""Per-pixel saliency maps (B, H, W) in [0, 1]: the counterfactual map and the trivial baselines.

The counterfactual map's settings all live in one config section, `config.saliency` (`reduce`,
`blur_radius`, `views`); `counterfactual_map` is the only place that turns (x, x_hat) into a map, and
`averaged_counterfactual_map` the only place that calls G for one (docs/explaining.md, "Views").
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

# The class without damage ("no crack", "healthy"): counterfactuals toward it show where the damage is,
# and masks are scored on images of the other classes.
NORMAL_CLASS = 0

REDUCTIONS = ("mean", "max", "l2", "min")
# config.saliency.views: over how many of the image's flips and transpositions the counterfactual map
# is averaged (the dihedral group's 8 elements, the first 4 being the flips).
VIEWS = {"identity": 1, "flips": 4, "dihedral": 8}


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


def _view(images: jnp.ndarray, index: int) -> jnp.ndarray:
    """The `index`-th of the 8 flips and transpositions of (B, H, W, ...) images (0 is the image itself)."""
    if index & 4:
        images = jnp.swapaxes(images, 1, 2)
    if index & 1:
        images = images[:, ::-1]
    if index & 2:
        images = images[:, :, ::-1]
    return images


def _unview(saliency: jnp.ndarray, index: int) -> jnp.ndarray:
    """(B, H, W) maps of the `index`-th view brought back to the image's own orientation."""
    if index & 2:
        saliency = saliency[:, :, ::-1]
    if index & 1:
        saliency = saliency[:, ::-1]
    if index & 4:
        saliency = jnp.swapaxes(saliency, 1, 2)
    return saliency


def counterfactual_views(generate: Callable[[jnp.ndarray, jnp.ndarray], tuple], images: jnp.ndarray,
                         targets: jnp.ndarray, count: int) -> list[tuple[int, jnp.ndarray, tuple]]:
    """[(index, view, G's outputs on the view)] for the first `count` views of the images. `generate(images,
    targets)` is G: it returns a tuple whose first entry is x_hat (G's apply gives (x_hat, head_logits)).
    The views of one orientation go through G as one batch (flips: one call, dihedral: two), so a view
    costs a larger batch, not another compiled G."""
    views = []
    for first in range(0, count, 4):  # the flips, then (dihedral) the flips of the transposition
        group = [(index, _view(images, index)) for index in range(first, min(first + 4, count))]
        outputs = generate(jnp.concatenate([view for _, view in group]), jnp.tile(targets, len(group)))
        for position, (index, view) in enumerate(group):
            rows = slice(position * len(images), (position + 1) * len(images))
            views.append((index, view, jax.tree.map(lambda a, rows=rows: a[rows], outputs)))
    return views


def view_averaged_map(views: list[tuple[int, jnp.ndarray, tuple]], settings: ml_collections.ConfigDict
                      ) -> jnp.ndarray:
    """The counterfactual map of each of `counterfactual_views`, turned back and averaged."""
    maps = [_unview(counterfactual_map(view, outputs[0], settings), index) for index, view, outputs in views]
    return sum(maps) / len(maps)


def averaged_counterfactual_map(generate: Callable[[jnp.ndarray, jnp.ndarray], tuple], images: jnp.ndarray,
                                targets: jnp.ndarray, settings: ml_collections.ConfigDict) -> tuple[tuple, jnp.ndarray]:
    """(G's outputs on the image itself, the counterfactual map averaged over `settings.views` of the image):
    what every GAN evaluation, explanation and prediction shows and scores.

    Why views: G is not equivariant to flips, so the speckle of its edits changes from view to view while
    the crack it removes stays; the average keeps the crack and thins the speckle (docs/explaining.md,
    "Views")."""
    views = counterfactual_views(generate, images, targets, VIEWS[settings.views])
    return views[0][2], view_averaged_map(views, settings)


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
