"""Per-example transforms: fit an image to the training resolution, augment it, make it float.

Pure numpy on one example, so grain can run them in worker threads; the random ones take a
`np.random.Generator` that grain seeds from (seed, example index), which makes every epoch's
augmentation a function of the run's seed alone.
"""

import numpy as np
from PIL import Image

FIT_MODES = ("resize", "crop")


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)


def _resize(array: np.ndarray, size: int, *, is_mask: bool) -> np.ndarray:
    if array.shape[:2] == (size, size):
        return array
    if is_mask:
        # Area-average the mask and keep every pixel a crack touches: the resized image darkens
        # exactly those pixels, and a 3 px crack must not vanish from an 8x smaller mask.
        coverage = Image.fromarray(array.astype(np.float32)).resize((size, size), Image.Resampling.BOX)
        return np.asarray(coverage) > 0
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))
    channels = [Image.fromarray(array[..., c]).resize((size, size), Image.Resampling.BILINEAR) for c in range(3)]
    return np.stack([np.asarray(c) for c in channels], -1)


def fit(example: dict, size: int, mode: str, rng: np.random.Generator | None = None) -> dict:
    """Bring image and mask to size x size: resize, or crop (random with `rng`, else centred)."""
    image = example["image"]
    height, width = image.shape[:2]
    out = dict(example)
    if mode == "crop" and height >= size and width >= size:
        if rng is None:
            y, x = (height - size) // 2, (width - size) // 2
        else:
            y, x = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        out["image"] = image[y:y + size, x:x + size]
        if "mask" in out:
            out["mask"] = out["mask"][y:y + size, x:x + size]
        return out
    if mode == "crop":
        # Smaller than the crop: a square centre crop, then resize (never pad with invented pixels).
        side = min(height, width)
        y, x = (height - side) // 2, (width - side) // 2
        out["image"] = image[y:y + side, x:x + side]
        if "mask" in out:
            out["mask"] = out["mask"][y:y + side, x:x + side]
    out["image"] = _resize(out["image"], size, is_mask=False)
    if "mask" in out:
        out["mask"] = _resize(out["mask"], size, is_mask=True)
    return out


def flip_rotate(example: dict, rng: np.random.Generator) -> dict:
    """One of the 8 flips / 90-degree rotations (cracks and fruit have no "up"), same for the mask."""
    turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    out = dict(example)
    for name in ("image", "mask"):
        if name in out:
            array = np.rot90(out[name], turns, axes=(0, 1))
            out[name] = np.ascontiguousarray(array[:, ::-1] if flip else array)
    return out


def colour_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation, each scaled by up to +-strength; float [0, 1]."""
    brightness, contrast, saturation = rng.uniform(-strength, strength, 3)
    grey = image.mean(axis=-1, keepdims=True)
    image = grey + (image - grey) * (1.0 + saturation)
    mean = image.mean()
    image = mean + (image - mean) * (1.0 + contrast) + brightness
    return np.clip(image, 0.0, 1.0).astype(np.float32)
