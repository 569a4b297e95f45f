"""`fruit_defects`: fresh vs rotten fruit photographs (Kaggle "Fruits fresh and rotten").

The distributed train/test folders share photos: the Kaggle set already holds augmented copies
(`rotated_by_15_…`, `vertical_flip_…`, `translation_…`, `saltandpepper_…`) of each photo, spread
over both folders. This builder pools the folders and splits by *base photo* (the file name with
those prefixes removed), so no photo is in two splits.
"""


import tensorflow_datasets as tfds

from cfjax.data.builders import class_folders

FRUITS = ("apples", "banana", "oranges")
# Prefixes of the augmented copies, possibly stacked; the rest of the stem names the base photo.
AUGMENTATION_PREFIXES = r"^(?:(?:rotated_by_\d+|vertical_flip|horizontal_flip|translation|saltandpepper)_)*(.*)$"


def _binary(fruits) -> dict:
    return {f"{state}{fruit}": label for fruit in fruits for state, label in (("fresh", "healthy"),
                                                                             ("rotten", "defective"))}


def _config(name: str, description: str, class_map: dict, class_names: tuple):
    return class_folders.ClassFoldersConfig(
        name=name, description=description, class_map=class_map, class_names=class_names,
        group_pattern=AUGMENTATION_PREFIXES,
    )


CONFIGS = (
    _config("apples", "Apples only, healthy vs defective (the paper's task).", _binary(["apples"]),
            ("healthy", "defective")),
    _config("all", "All three fruits, healthy vs defective.", _binary(FRUITS), ("healthy", "defective")),
    _config("fruit_state", "Fruit x state: six classes.",
            {f"{state}{fruit}": f"{state}{fruit}" for state in ("fresh", "rotten") for fruit in FRUITS},
            tuple(f"{state}{fruit}" for state in ("fresh", "rotten") for fruit in FRUITS)),
)


class FruitDefects(class_folders.ClassFolders):
    """Fresh/rotten fruit folders, split by base photo; needs no TensorFlow."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Pooled train/test folders, split by base photo."}
    BUILDER_CONFIGS = list(CONFIGS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
Download "Fruits fresh and rotten for classification" (Kaggle, uploader sriramr) and give the
folder that contains its class folders (--manual_dir): freshapples/ rottenapples/ freshbanana/
rottenbanana/ freshoranges/ rottenoranges/, at any depth (e.g. dataset/train/freshapples).
"""


