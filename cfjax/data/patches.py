"""The patch view of a segmentation image: which square crops are *crack*, *no crack*, or dropped.

A patch is *crack* when the mask covers at least `min_crack_fraction` of it; *no crack* only when
the patch grown by `margin` pixels on every side holds no crack pixel, so a crack just outside a
negative crop cannot leak into it after augmentation or resizing; anything in between is dropped.
"""

import dataclasses

import numpy as np

NO_CRACK, CRACK = 0, 1


@dataclasses.dataclass(frozen=True)
class Patch:
    y: int
    x: int
    label: int
    crack_fraction: float


def _integral(mask: np.ndarray) -> np.ndarray:
    """Summed-area table with a zero first row and column: any box sum in four lookups."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return table


def _box_sum(table: np.ndarray, y0: int, x0: int, y1: int, x1: int) -> int:
    return int(table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0])


def grid_patches(
    mask: np.ndarray, *, size: int, stride: int, min_crack_fraction: float, margin: int
) -> list[Patch]:
    """Labelled patches on a regular grid over a binary (H, W) mask; ambiguous ones are left out."""
    if size <= 0 or stride <= 0 or margin < 0:
        raise ValueError(f"patch size {size} and stride {stride} must be > 0, margin {margin} >= 0")
    height, width = mask.shape
    table = _integral(mask)
    patches = []
    for y in range(0, height - size + 1, stride):
        for x in range(0, width - size + 1, stride):
            cracks = _box_sum(table, y, x, y + size, x + size)
            fraction = cracks / (size * size)
            if cracks > 0 and fraction >= min_crack_fraction:
                patches.append(Patch(y, x, CRACK, fraction))
            elif cracks == 0:
                surround = _box_sum(
                    table, max(y - margin, 0), max(x - margin, 0),
                    min(y + size + margin, height), min(x + size + margin, width),
                )
                if surround == 0:
                    patches.append(Patch(y, x, NO_CRACK, 0.0))
    return patches
