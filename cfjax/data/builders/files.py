"""File handling shared by the TFDS builders: listing, decoding with named errors, grouped splits.

Everything here works on plain files and numpy, so builders never need TensorFlow.
"""

import hashlib
import io
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
from absl import logging
from PIL import Image, ImageOps, UnidentifiedImageError

from cfjax.errors import DataError, ManualDirError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SPLITS = ("train", "validation", "test")


def require_manual_dir(path, instructions: str, *, expect: Sequence[str] = ()) -> str:
    """`path` as a string, or `ManualDirError` with the download instructions if it is unusable."""
    path = os.fspath(path) if path is not None else ""
    problem = None
    if not path or not os.path.isdir(path):
        problem = f"the manual data folder {path or '(none given)'!r} does not exist"
    elif not os.listdir(path):
        problem = f"the manual data folder {path!r} is empty"
    else:
        missing = [name for name in expect if not os.path.exists(os.path.join(path, name))]
        if missing:
            problem = f"the manual data folder {path!r} lacks {', '.join(missing)}"
    if problem:
        raise ManualDirError(f"{problem}.\n{instructions.strip()}")
    return path


def list_images(folder: str) -> list[str]:
    """Image files directly in `folder`, sorted by name (hidden files skipped)."""
    if not os.path.isdir(folder):
        raise ManualDirError(f"expected a folder of images at {folder!r}; it does not exist")
    return sorted(
        os.path.join(folder, name) for name in os.listdir(folder)
        if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
    )


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# How a file's pixels are read, the same for `prepare` and `--mode=explain --folder`: as a viewer shows
# them. EXIF orientation is applied; any mode becomes RGB; 16-bit values are scaled by their range
# (0..65535 -> 0..255), never clipped; float images must hold [0, 1]; a file of several frames (an animated
# GIF or WebP, a multi-page TIFF) is refused. Transparency: an image is
# composited on white (a page behind it), a mask on black (its background).
_HIGH_BIT_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _open(path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour (H, W, 3) float32 in [0, 255], alpha (H, W) float32 in [0, 1] or None), upright."""
    try:
        with Image.open(path) as image:
            pages = _pages_shown(image, path, what)
            if pages > 1:  # a viewer plays or pages through it: which frame is "the" image is not ours to guess
                raise DataError(f"cannot read {what} {path}: it holds {pages} frames (an animation or a multi-page "
                                f"file); save the one frame to use as an image of its own")
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _as_colour_and_alpha(image, path, what)
    except DataError:
        raise
    except Image.DecompressionBombError as error:  # refused at open, before any pixel is decoded
        raise DataError(f"cannot read {what} {path}: {error} Cut it into smaller images.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {what} {path}: {error}") from error


def _pages_shown(image: Image.Image, path: str, what: str) -> int:
    """How many pictures a viewer shows in turn. Not pages: the extra pictures of a multi-picture JPEG (MPO: a
    camera's large preview, a phone's HDR gain map; viewers show the first) and a TIFF's reduced-resolution
    copies (thumbnails: NewSubfileType bit 0)."""
    try:
        frames = getattr(image, "n_frames", 1)
        if frames == 1 or image.format == "MPO":
            return 1
        if image.format != "TIFF":
            return frames
        full = 0
        for frame in range(frames):
            image.seek(frame)
            full += not int(image.tag_v2.get(254, 0)) & 1
        return full
    except Exception as error:  # noqa: BLE001 (a damaged frame table fails in many ways; each is this file's fault)
        raise DataError(f"cannot read {what} {path}: its frames cannot be read ({type(error).__name__}: "
                        f"{error})") from error


def _as_colour_and_alpha(image: Image.Image, path: str, what: str):
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "La", "RGBa"):
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    mode = image.mode
    if mode in _HIGH_BIT_DEPTH or mode == "F":
        values = np.asarray(image).astype(np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if mode == "F":
            if low < 0 or high > 1:
                raise DataError(f"cannot read {what} {path}: its floating-point values span [{low:g}, {high:g}], "
                                f"not [0, 1]; save it as an 8- or 16-bit image")
            values = values * 255.0
        else:
            if low < 0 or high > 65535:
                raise DataError(f"cannot read {what} {path}: its integer values span [{low:g}, {high:g}], beyond "
                                f"16 bits; save it as an 8- or 16-bit image")
            values = values * (255.0 / 65535.0)
        grey = values.astype(np.float32)
        return np.stack([grey] * 3, -1), None
    if mode not in ("L", "LA", "RGB", "RGBA"):
        raise DataError(f"cannot read {what} {path}: unsupported colour mode {mode}")
    array = np.asarray(image).astype(np.float32)
    if mode == "L":
        return np.stack([array] * 3, -1), None
    if mode == "LA":
        return np.stack([array[..., 0]] * 3, -1), array[..., 1] / 255.0
    if mode == "RGB":
        return array, None
    return array[..., :3], array[..., 3] / 255.0


def read_image(path: str) -> np.ndarray:
    """An image file decoded fully (a truncated file fails here, not later) as a viewer shows it:
    RGB uint8 (H, W, 3), upright, transparency composited on white."""
    colour, alpha = _open(path, "image")
    if alpha is not None:
        colour = colour * alpha[..., None] + 255.0 * (1.0 - alpha[..., None])
    return np.clip(np.round(colour), 0, 255).astype(np.uint8)


def read_mask_levels(path: str, *, crack_value: int | None = None) -> np.ndarray:
    """A mask file as damage levels, uint8 (H, W): 0 is background (black, or transparent), any other
    colour is damage, its level the brightest channel (white and pure red, green or blue are all 255;
    anti-aliased edges are darker). A level that rounds to 0 but is not black stays 1, so faint
    damage is never read as background. With `crack_value`, pixels of that level in two colours (red
    cracks and blue formwork, both 255) are refused: the value cannot tell them apart."""
    colour, alpha = _open(path, "mask")
    if alpha is not None:
        if alpha.min() < 1 and alpha.max() > 0 and not colour[alpha > 0].any():
            raise DataError(f"mask {path} draws its shapes only in transparency (every visible pixel is black); "
                            f"draw damage in a colour on a black background")
        if alpha.max() == 0 and colour.any():
            raise DataError(f"mask {path} is fully transparent but holds colour underneath; "
                            f"draw damage in a colour on a black background")
        colour = colour * alpha[..., None]
    level = colour.max(axis=-1)
    rounded = np.clip(np.round(level), 0, 255).astype(np.uint8)
    rounded[(level > 0) & (rounded == 0)] = 1
    if crack_value is not None:
        at = np.round(colour[rounded == crack_value]).astype(np.int32)
        if len(at) and (at != at[0]).any():
            shown = ", ".join(str(tuple(c)) for c in np.unique(at, axis=0)[:3].tolist())
            raise DataError(f"mask {path} holds several colours at level {crack_value} ({shown}, ...): "
                            f"--crack_value cannot tell them apart; save the label map with one channel")
    return rounded


def check_mask_rule(threshold: int | None, crack_value: int | None) -> None:
    """`mask_threshold` in [0, 255) and `crack_value` in [0, 255]: other values match every pixel or none."""
    if crack_value is not None and not 0 <= crack_value <= 255:
        raise DataError(f"--crack_value={crack_value}: must be a mask level in [0, 255]")
    if crack_value is None and threshold is not None and not 0 <= threshold < 255:
        raise DataError(f"--mask_threshold={threshold}: must be in [0, 255) (damage is a level above it)")


def binarize(levels: np.ndarray, *, threshold: int | None, crack_value: int | None) -> np.ndarray:
    """Crack pixels: `== crack_value` when given (label maps), else `> threshold` (anti-aliased masks)."""
    if crack_value is not None:
        return levels == crack_value
    return levels > (127 if threshold is None else threshold)


def read_binary_mask(path: str, *, threshold: int | None, crack_value: int | None,
                     levels_seen: "MaskLevels | None" = None, image: tuple | None = None) -> np.ndarray:
    """A mask file as a boolean (H, W) crack map (see `read_mask_levels`). Refused as ambiguous: a mask
    whose values all sit at or below a non-zero threshold (0/1 masks, dim label maps: it would silently
    become empty), and one whose border is mostly damage (its background is not black: inverted?).
    `image` = (its image's path, array): a mask of another size is refused first."""
    check_mask_rule(threshold, crack_value)
    levels = read_mask_levels(path, crack_value=crack_value)
    if image is not None:
        check_same_size(image[1], levels, image[0], path)
    if crack_value is None:
        threshold = 127 if threshold is None else threshold
        if 0 < levels.max() <= threshold:
            raise DataError(f"mask {path} has values up to {levels.max()} only, none above the threshold "
                            f"{threshold}: set --mask_threshold or --crack_value for this encoding")
    damage = binarize(levels, threshold=threshold, crack_value=crack_value)
    border = np.concatenate([damage[0], damage[-1], damage[1:-1, 0], damage[1:-1, -1]])
    if damage.size > 1 and border.mean() > 0.5:
        rule = f"== {crack_value}" if crack_value is not None else f"> {threshold}"
        raise DataError(f"mask {path}: {100 * border.mean():.0f}% of its border is damage (level {rule}); "
                        f"the background must be black, damage any other colour (an inverted mask?)")
    if levels_seen is not None:
        levels_seen.add(levels, damage)
    return damage


class MaskLevels:
    """The levels of every mask read and how many pixels were damage: a threshold or crack value that
    matches no pixel of any mask, or every pixel of every mask, is refused once all are read."""

    def __init__(self):
        self.histogram = np.zeros(256, np.int64)
        self.damage = self.pixels = 0

    def add(self, levels: np.ndarray, damage: np.ndarray) -> None:
        self.histogram += np.bincount(levels.ravel(), minlength=256)
        self.damage += int(damage.sum())
        self.pixels += damage.size

    def held(self) -> str:
        values = np.flatnonzero(self.histogram).tolist()
        if len(values) <= 8:
            return ", ".join(map(str, values))
        return f"{len(values)} distinct values from {values[0]} to {values[-1]}"

    def check(self, where: str, *, threshold: int | None, crack_value: int | None) -> None:
        if not self.pixels:
            return
        flag = f"--crack_value={crack_value}" if crack_value is not None else \
            f"--mask_threshold={127 if threshold is None else threshold}"
        if self.damage == 0 and (crack_value is not None or self.histogram[1:].any()):
            raise DataError(f"{flag} matches no pixel of any mask in {where}; the masks hold the values {self.held()}")
        if self.damage == self.pixels:
            raise DataError(f"{flag} makes every pixel of every mask in {where} damage; "
                            f"the masks hold the values {self.held()}")


def encode_png(array: np.ndarray) -> bytes:
    """Lossless bytes TFDS stores as-is (encoding arrays itself would need TensorFlow)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def split_of(group: str, fractions: Sequence[float], *, salt: str = "cfjax") -> str:
    """Stable split of a group by a hash of its name: adding files never moves other groups."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    bound = 0.0
    for split, fraction in zip(SPLITS, fractions):
        bound += fraction
        if position < bound:
            return split
    return SPLITS[-1]


def non_empty(by_split: dict, root: str) -> dict:
    """The splits that received files; too few photos for a split is a warning, not a failure."""
    empty = [split for split, items in by_split.items() if not items]
    if len(empty) == len(by_split):
        raise ManualDirError(f"no images found under {root}")
    if empty:
        logging.warning("%s: no source photo fell into split(s) %s; add photos or change split_fractions",
                        root, ", ".join(empty))
    return {split: items for split, items in by_split.items() if items}


def group_name(name: str, pattern: str | None) -> str:
    """The part of a file stem that identifies its source photo (`pattern`'s first group), or the stem."""
    if not pattern:
        return name
    try:
        match = re.search(pattern, name)
    except re.error as error:
        raise DataError(f"group_pattern {pattern!r} is not a valid regular expression: {error}") from error
    return match.group(1) if match and match.groups() else (match.group(0) if match else name)


class BadFileCounter:
    """Either fail on the first unreadable file (`skip=False`) or skip and count them."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.skipped: list[str] = []

    def guard(self, read, *args, **kwargs):
        """`read(*args)`, or None when it fails and skipping is on."""
        try:
            return read(*args, **kwargs)
        except DataError as error:
            if not self.skip:
                raise
            if str(error) not in self.skipped:  # a file read by two views is counted once
                self.skipped.append(str(error))
            return None


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}"
        )


def unique_stems(paths: Iterable[str]) -> dict[str, str]:
    """{stem: path}; two files with one stem (a.jpg and a.png) are an error naming both."""
    by_stem: dict[str, str] = {}
    for path in paths:
        if stem(path) in by_stem:
            raise DataError(f"{by_stem[stem(path)]} and {path} share the name {stem(path)!r}; keep one of them")
        by_stem[stem(path)] = path
    return by_stem


def pair_by_stem(images: Iterable[str], masks: Iterable[str], *, image_folder: str, mask_folder: str):
    """[(image, mask)] matched by file stem; an image without a mask is an error naming it."""
    images = list(unique_stems(images).values())
    by_stem = unique_stems(masks)
    pairs = []
    for image in images:
        mask = by_stem.get(stem(image))
        if mask is None:
            raise DataError(f"image {image} has no mask named {stem(image)}.* in {mask_folder}")
        pairs.append((image, mask))
    if not pairs:
        raise ManualDirError(f"no images found in {image_folder}")
    return pairs
