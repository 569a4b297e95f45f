"""Options for thinner masks, scored as rows of their own beside the unchanged maps (`config.explain`):

* `thin_nms`: non-maximum suppression across the crack (in the spirit of FPHBN's `crack_nms`, after
  Dollár's edge NMS): a pixel keeps its saliency only where it is a local maximum of the smoothed map
  along the direction across the ridge (the Hessian's most negative curvature, quantised to 4
  directions); elsewhere it is 0. Applied to the run's own map (the first method);
* `thin_reduce`: for GAN runs, the counterfactual map with a sharper channel reduction (e.g. "min": a
  pixel counts as much as its least-changed channel) and without blur.

Their thresholds are tuned on validation like every map's; whether one helps is read on validation
(explain.json's `validation` entries), never on test.
"""

import jax.numpy as jnp
import ml_collections
import numpy as np

from cfjax.masks import maps as saliency_maps


def _shift(maps: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
    """maps[y + dy, x + dx], edge-padded."""
    height, width = maps.shape[1:]
    padded = jnp.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def _sample(maps: jnp.ndarray, dy: jnp.ndarray, dx: jnp.ndarray) -> jnp.ndarray:
    """maps[y + dy, x + dx] by bilinear interpolation, for per-pixel offsets in [-1, 1]."""
    tent = lambda offset, at: jnp.maximum(0.0, 1.0 - jnp.abs(offset - at))
    return sum(tent(dy, a) * tent(dx, b) * _shift(maps, a, b) for a in (-1, 0, 1) for b in (-1, 0, 1))


def ridge_nms(maps: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W) maps kept only on their ridge lines: where the map, smoothed by a 5x5 triangle filter (two
    3x3 box blurs), is >= the smoothed map one pixel away on both sides across the ridge (bilinear
    samples, as Canny's and Dollár's NMS); elsewhere 0. Exact ties survive."""
    smoothed = saliency_maps.box_blur(saliency_maps.box_blur(maps, 1), 1)
    s = lambda dy, dx: _shift(smoothed, dy, dx)
    hxx = s(0, 1) - 2 * smoothed + s(0, -1)
    hyy = s(1, 0) - 2 * smoothed + s(-1, 0)
    hxy = (s(1, 1) - s(1, -1) - s(-1, 1) + s(-1, -1)) / 4
    # Across the ridge is the direction of the strongest curvature: the Hessian's eigenvector whose
    # eigenvalue is largest in magnitude. The larger eigenvalue's lies at 0.5 atan2(2 hxy, hxx - hyy); the
    # other's a quarter turn on, and it is the stronger when the trace is negative (on a bright ridge).
    across = 0.5 * jnp.arctan2(2 * hxy, hxx - hyy) + jnp.where(hxx + hyy < 0, np.pi / 2, 0.0)
    dy, dx = jnp.sin(across), jnp.cos(across)
    keep = (smoothed >= _sample(smoothed, dy, dx)) & (smoothed >= _sample(smoothed, -dy, -dx))
    return jnp.where(keep, maps, 0.0)


def variant_names(first: str, draws_counterfactual: bool, explain: ml_collections.ConfigDict) -> tuple:
    """The rows the options add, after the run's own methods."""
    names = (f"{first}_nms",) if explain.thin_nms else ()
    if explain.thin_reduce and draws_counterfactual:
        names += (f"counterfactual_{explain.thin_reduce}",)
    return names


def variant_maps(maps: dict, first: str, images: jnp.ndarray, counterfactual: jnp.ndarray | None,
                 config: ml_collections.ConfigDict) -> dict:
    """{name: map} of `variant_names`, from the run's maps (and, for GAN runs, x and x_hat)."""
    out = {}
    if config.explain.thin_nms:
        out[f"{first}_nms"] = ridge_nms(maps[first])
    if config.explain.thin_reduce and counterfactual is not None:
        out[f"counterfactual_{config.explain.thin_reduce}"] = saliency_maps.counterfactual_saliency(
            images, counterfactual, config.explain.thin_reduce)
    return out
