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
