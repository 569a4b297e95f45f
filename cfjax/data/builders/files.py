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
from PIL import Image, UnidentifiedImageError

from cfjax.errors import DataError, ManualDirError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
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


def read_image(path: str, *, mode: str = "RGB") -> np.ndarray:
    """Decode an image file fully (a truncated file fails here, not later), as uint8 in `mode`."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}") from error


def read_mask_channel(path: str) -> np.ndarray:
    """The first channel of a mask stored as grayscale, RGB (R = G = B) or RGBA, as uint8 (H, W)."""
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image.convert("L") if image.mode in ("1", "P", "I", "I;16", "F") else image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read mask {path}: {error}") from error
    return array if array.ndim == 2 else array[..., 0]


def binarize(channel: np.ndarray, *, threshold: int | None, crack_value: int | None) -> np.ndarray:
    """Crack pixels: `== crack_value` when given (label maps), else `> threshold` (anti-aliased masks)."""
    if crack_value is not None:
        return channel == crack_value
    return channel > (127 if threshold is None else threshold)


def read_binary_mask(path: str, *, threshold: int | None, crack_value: int | None) -> np.ndarray:
    """A mask file as a boolean (H, W) crack map; a mask whose values all sit at or below a non-zero
    threshold (0/1 masks, dim label maps) would silently become empty, so it is an error instead."""
    channel = read_mask_channel(path)
    if crack_value is None:
        threshold = 127 if threshold is None else threshold
        if 0 < channel.max() <= threshold:
            raise DataError(f"mask {path} has values up to {channel.max()} only, none above the threshold "
                            f"{threshold}: set --mask_threshold or --crack_value for this encoding")
    return binarize(channel, threshold=threshold, crack_value=crack_value)


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
