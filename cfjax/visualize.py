"""PNG grids of counterfactuals: x | x_hat | saliency heatmap | ground-truth mask, one row per image."""

import io

import numpy as np
from PIL import Image

from cfjax import storage

# Anchor colours of a perceptually ordered black -> purple -> orange -> yellow map (inferno-like).
_HEAT_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
) / 255.0


def heatmap(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """(..., H, W) values -> (..., H, W, 3) RGB in [0, 1]; scaled by vmax (default: the maximum)."""
    values = np.asarray(values, np.float32)
    vmax = float(values.max()) if vmax is None else vmax
    scaled = np.clip(values / max(vmax, 1e-8), 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
    low = np.floor(scaled).astype(int).clip(0, len(_HEAT_ANCHORS) - 2)
    frac = (scaled - low)[..., None]
    return _HEAT_ANCHORS[low] * (1 - frac) + _HEAT_ANCHORS[low + 1] * frac


def counterfactual_grid(images, counterfactuals, maps, masks, *, upscale: int = 3, gap: int = 2) -> np.ndarray:
    """One row per image: input, counterfactual, its saliency map (`cfjax.masks.maps.counterfactual_map`)
    as a heatmap on one scale for the whole grid, ground truth. uint8 (H, W, 3)."""
    images, counterfactuals, maps = np.asarray(images), np.asarray(counterfactuals), np.asarray(maps)
    vmax = max(float(maps.max()), 1e-3)
    truth = grey_to_rgb(masks)
    rows = [[x, x_hat, d, m] for x, x_hat, d, m in zip(images, counterfactuals, heatmap(maps, vmax), truth)]
    return panel_grid(rows, upscale=upscale, gap=gap)


def panel_grid(rows: list, *, upscale: int = 1, gap: int = 2) -> np.ndarray:
    """Rows of equally sized (H, W, 3) float panels in [0, 1], separated by white gaps: uint8 image."""
    grid = _vstack([_hstack(panels, gap) for panels in rows], gap)
    grid = np.repeat(np.repeat(grid, upscale, axis=0), upscale, axis=1)
    return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)


def grey_to_rgb(mask: np.ndarray) -> np.ndarray:
    """A (H, W) mask or map in [0, 1] as an (H, W, 3) grey panel."""
    return np.repeat(np.asarray(mask, np.float32)[..., None], 3, axis=-1)


def _hstack(panels, gap):
    spacer = np.ones((panels[0].shape[0], gap, 3), np.float32)
    out = [panels[0]]
    for p in panels[1:]:
        out += [spacer, p]
    return np.concatenate(out, axis=1)


def _vstack(rows, gap):
    spacer = np.ones((gap, rows[0].shape[1], 3), np.float32)
    out = [rows[0]]
    for r in rows[1:]:
        out += [spacer, r]
    return np.concatenate(out, axis=0)


def save_png(path, image: np.ndarray) -> None:
    """Write a uint8 RGB array as PNG, atomically; a failed write is a `StorageError` naming the path.
    In a multi-process run only process 0 writes (the others computed the same image)."""
    if _other_process():
        return
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    storage.write_bytes_atomic(str(path), buffer.getvalue())


def outline(panel, colour=(0.0, 1.0, 0.0), width: int = 1) -> np.ndarray:
    """A copy of an (H, W, 3) panel with a coloured frame (marks the nearest target in figures)."""
    framed = np.array(panel, np.float32)
    framed[:width], framed[-width:], framed[:, :width], framed[:, -width:] = colour, colour, colour, colour
    return framed


def _other_process() -> bool:
    """A process other than 0 of a multi-process JAX run (JAX is imported only if the caller already did)."""
    import sys

    jax = sys.modules.get("jax")
    return jax is not None and jax.process_index() != 0
