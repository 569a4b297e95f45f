"""clIoU (OmniCrack30k's centreline IoU with a tolerance): skeletons of the predicted and the true mask,
each dilated by a disk, compared by IoU. The skeleton is a jittable, batched Zhang-Suen thinning, so
clIoU is counted in the same jitted pass as the other scores, on one binary mask per image (the frozen
threshold's).
"""

import jax
import jax.numpy as jnp

from cfjax.masks.tolerant import dilate

# Zhang-Suen's neighbours P2..P9 as (dy, dx): north, then clockwise.
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _neighbours(image: jnp.ndarray) -> list:
    """The 8 neighbours P2..P9 of every pixel of (B, H, W) int maps (0 outside the image)."""
    height, width = image.shape[1:]
    padded = jnp.pad(image, ((0, 0), (1, 1), (1, 1)))
    return [padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for dy, dx in _NEIGHBOURS]


def _subiteration(image: jnp.ndarray, first: bool) -> jnp.ndarray:
    p2, p3, p4, p5, p6, p7, p8, p9 = n = _neighbours(image)
    count = sum(n)
    transitions = sum((n[i] == 0) & (n[(i + 1) % 8] == 1) for i in range(8))
    if first:
        sides = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
    else:
        sides = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
    delete = (image == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & sides
    kept = jnp.where(delete, 0, image)
    # Zhang-Suen deletes a 2x2 block (or a 2-pixel-thick diagonal end) whole: a deleted pixel none of
    # whose neighbours survive stays, so no component vanishes.
    alone = sum(_neighbours(kept)) == 0
    return jnp.where(delete & alone, 1, kept)


def skeletonize(masks: jnp.ndarray) -> jnp.ndarray:
    """Binary (B, H, W) masks thinned to 8-connected centrelines one pixel wide (Zhang and Suen, 1984, with
    the guard above), iterated until nothing changes. Pixels are only ever removed, so it ends."""
    image = masks.astype(jnp.int32)

    def step(state):
        image, _ = state
        thinned = _subiteration(_subiteration(image, True), False)
        return thinned, jnp.any(thinned != image)

    skeleton, _ = jax.lax.while_loop(lambda state: state[1], step, (image, jnp.array(True)))
    return skeleton.astype(bool)


def centerline_counts(predicted: jnp.ndarray, truth_band: jnp.ndarray, radius: int) -> dict:
    """Per image: |A ∩ B| and |A ∪ B| of A = the predicted skeleton dilated by a disk of `radius` and
    B = `truth_band` (the true skeleton, dilated the same way: `centerline_band`). True negatives never count."""
    return band_overlap(centerline_band(predicted, radius), truth_band)


def band_overlap(band: jnp.ndarray, truth_band: jnp.ndarray) -> dict:
    """Per image: |A ∩ B| and |A ∪ B| of two dilated skeletons (B, H, W)."""
    count = lambda a: jnp.sum(a, axis=(1, 2)).astype(jnp.float32)
    return {"cl_intersection": count(band & truth_band), "cl_union": count(band | truth_band)}


def centerline_band(masks: jnp.ndarray, radius: int) -> jnp.ndarray:
    """A mask's skeleton dilated by a disk of `radius`."""
    return dilate(skeletonize(masks), radius)
