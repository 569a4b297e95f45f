"""Evaluation data straight from a folder of image/mask pairs (no TFDS dataset to build), and how a
run trained on patches sees whole photographs (blended tiles, `cfjax.tiling`) or resized ones."""

import os

import jax
import numpy as np

from cfjax.data import transforms
from cfjax.data.builders import files
from cfjax.errors import DataError


def load_pairs(folder: str, *, images: str = "images", masks: str = "masks", mask_threshold: int | None = 127,
               crack_value: int | None = None) -> list[dict]:
    """[{"name", "image" float32 (H, W, 3) in [0, 1], "mask" bool (H, W)}] for every image in
    FOLDER/images with a mask of the same name in FOLDER/masks, read as `prepare` reads them
    (`files.read_image`, `files.read_binary_mask`). A mask pixel is damage if its level equals
    `crack_value`, else if it is above `mask_threshold`; a rule that makes no pixel of any mask damage,
    or every pixel of every mask, is refused."""
    if not os.path.isdir(folder):
        raise DataError(f"the folder to explain, {folder!r}, does not exist")
    image_dir, mask_dir = os.path.join(folder, images), os.path.join(folder, masks)
    for path in (image_dir, mask_dir):
        if not os.path.isdir(path):
            raise DataError(f"{folder!r} has no {os.path.basename(path)}/ subfolder; expected "
                            f"{folder}/{images}/NAME.jpg with {folder}/{masks}/NAME.png")
    pairs = files.pair_by_stem(files.list_images(image_dir), files.list_images(mask_dir),
                               image_folder=image_dir, mask_folder=mask_dir)
    threshold = None if crack_value is not None else mask_threshold
    files.check_mask_rule(threshold, crack_value)
    examples, levels = [], files.MaskLevels()
    for image_path, mask_path in pairs:
        image = files.read_image(image_path)
        mask = files.read_binary_mask(mask_path, threshold=threshold, crack_value=crack_value, levels_seen=levels,
                                      image=(image_path, image))
        files.check_same_size(image, mask, image_path, mask_path)
        examples.append({"name": files.stem(image_path), "image": transforms.to_float(image), "mask": mask})
    levels.check(mask_dir, threshold=threshold, crack_value=crack_value)
    return examples


def check_tileable(image: np.ndarray, size: int, name: str) -> None:
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise DataError(f"image {name} is {image.shape[1]}x{image.shape[0]}, too small to explain")
    if max(image.shape[:2]) > 64 * size:
        raise DataError(f"image {name} is {image.shape[1]}x{image.shape[0]}: over {64 * size} pixels on a side "
                        f"(64 tiles of {size}); resize it first")


def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, C) image resized (bilinear) to size x size: how runs trained on whole images see one."""
    return np.asarray(jax.image.resize(image, (size, size) + image.shape[2:], method="bilinear"))


def resize_back(array: np.ndarray, shape: tuple) -> np.ndarray:
    """A map or image made at the training size, resized (bilinear) back to the original (H, W)."""
    return np.asarray(jax.image.resize(array, tuple(shape) + array.shape[2:], method="bilinear"))
