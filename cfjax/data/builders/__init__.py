"""TFDS builders for real data; importing this package registers them with `tensorflow_datasets`."""

from cfjax.data.builders.class_folders import ClassFolders
from cfjax.data.builders.crack_segmentation import CrackSegmentation
from cfjax.data.builders.fruit_defects import FruitDefects

BUILDERS = {"crack_segmentation": CrackSegmentation, "fruit_defects": FruitDefects, "class_folders": ClassFolders}

__all__ = ["BUILDERS", "ClassFolders", "CrackSegmentation", "FruitDefects"]
