"""Small real subsets of ../shared/data, copied into a test's temporary folder and prepared there."""

import pathlib
import shutil

from cfjax.data import prepare as prepare_lib


def copy_pairs(source: pathlib.Path, target: pathlib.Path, stems, image_dir="images", mask_dir="masks",
               image_ext=".jpg", mask_ext=".png") -> pathlib.Path:
    for folder in (image_dir, mask_dir):
        (target / folder).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy(source / image_dir / f"{stem}{image_ext}", target / image_dir)
        shutil.copy(source / mask_dir / f"{stem}{mask_ext}", target / mask_dir)
    return target


def prepare(dataset: str, manual_dir: pathlib.Path, data_dir: pathlib.Path, **kwargs) -> dict:
    return prepare_lib.prepare(dataset, str(manual_dir), str(data_dir), **kwargs)


def synthetic_crack_source(name: str, data_dir: pathlib.Path, *, num_photos: int = 12, size: int = 128,
                           seed: int = 0) -> str:
    """A tiny crack_segmentation dataset NAME prepared from generated photos (the embedded set's cracks at
    `size` px, written as PNG photos and 0/255 masks): a crack source for tests that needs no real data.
    Returns its `data.name`, crack_segmentation/NAME."""
    import numpy as np
    from PIL import Image

    from cfjax.data import synthetic

    manual = data_dir.parent / f"{name}_files"
    arrays = synthetic.generate_split("train", 4 * num_photos, seed=seed, image_size=size)
    # Photo i holds a crack unless i is a multiple of 3: every split (assigned by a hash of the name) gets some.
    by_label = [iter(np.flatnonzero(arrays["label"] == label)) for label in (0, 1)]
    for folder in ("images", "masks"):
        (manual / folder).mkdir(parents=True, exist_ok=True)
    for i in range(num_photos):
        row = next(by_label[int(i % 3 != 0)])
        Image.fromarray((arrays["image"][row] * 255).round().astype(np.uint8)).save(manual / "images" / f"{i}.png")
        Image.fromarray(arrays["mask"][row].astype(np.uint8) * 255).save(manual / "masks" / f"{i}.png")
    prepare("crack_segmentation/folder", manual, data_dir, config_name=name)
    return f"crack_segmentation/{name}"
