"""`class_folders`: your own images, one subfolder per class, optionally with masks; no code needed.

Layout under the manual folder:

    <class_a>/*.jpg  <class_b>/*.jpg  ...      one folder per class (the folder name is the class),
                                               or the same inside train/ val/ test/ folders
    masks/<class>/<stem>.png or masks/<stem>.png  (optional) a mask for any image that has one

Images are split by a hash of their source name (the file stem, or the first group of
`group_pattern`), so augmented copies of one photo never land in two splits.
"""

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from cfjax.data.builders import base, files

MASKS_FOLDER = "masks"


@dataclasses.dataclass(eq=False)
class ClassFoldersConfig(tfds.core.BuilderConfig):
    """Which folders are which class, how files group into photos, and how masks are encoded."""

    # {folder name: class name}; None = every subfolder (except masks/) is its own class.
    class_map: dict | None = None
    class_names: tuple | None = None  # label order; default: sorted class names
    group_pattern: str | None = None
    split_fractions: tuple = (0.7, 0.15, 0.15)
    mask_threshold: int | None = 127
    crack_value: int | None = None


MANUAL_DOWNLOAD_INSTRUCTIONS = """
Give the folder that holds one subfolder of images per class (--manual_dir), e.g.
  my_data/good/*.jpg  my_data/defective/*.jpg  [my_data/masks/<stem>.png for images with a mask]
Class folders may also sit inside train/ val/ test/ folders: those are pooled and re-split by photo.
Label 0 is the first of --class_names (default: alphabetical); make it the normal class.
"""


# Folders that hold a split of the classes rather than a class (pooled, then re-split by photo).
SPLIT_FOLDERS = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def _subfolders(directory: str) -> list[str]:
    return sorted(d for d in os.listdir(directory)
                  if not d.startswith(".") and d != MASKS_FOLDER and os.path.isdir(os.path.join(directory, d)))


def find_class_folders(root: str, class_map: dict | None) -> dict[str, list[str]]:
    """{class folder name: [paths of folders with that name]}: folders named in `class_map` at any
    depth, or else the subfolders of `root` (or of its train/ val/ test/ folders, pooled)."""
    found: dict[str, list[str]] = {}
    if class_map is not None:
        for directory, subdirs, _ in os.walk(root):
            subdirs[:] = [d for d in sorted(subdirs) if not d.startswith(".") and d != MASKS_FOLDER]
            for name in subdirs:
                if name in class_map:
                    found.setdefault(name, []).append(os.path.join(directory, name))
        return found
    top = _subfolders(root)
    parents = [os.path.join(root, d) for d in top] if top and set(top) <= SPLIT_FOLDERS else [root]
    for parent in parents:
        for name in _subfolders(parent):
            found.setdefault(name, []).append(os.path.join(parent, name))
    return found


class ClassFolders(base.ManualFolderBuilder):
    """Images in class folders from a manual folder, split by source photo; needs no TensorFlow."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Class folders with optional masks, split by source photo."}
    BUILDER_CONFIGS = [ClassFoldersConfig(name="default", description="One subfolder per class.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        names = self.builder_config.class_names
        return self._image_mask_info(
            __doc__,
            has_mask=np.bool_,
            label=tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel(),
            source=tfds.features.Text(),
            file=tfds.features.Text(),  # path relative to the manual folder
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        root = files.require_manual_dir(dl_manager.manual_dir, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        folders = find_class_folders(root, cfg.class_map)
        class_of = cfg.class_map or {name: name for name in folders}
        names = list(cfg.class_names or sorted(set(class_of.values())))
        missing = sorted(folder for folder, cls in class_of.items() if folder not in folders)
        if missing or not folders:
            raise files.ManualDirError(
                f"no class folder named {missing or '<any>'} under {root}.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}"
            )
        if sorted(names) != sorted(set(class_of.values())):
            raise files.DataError(f"class_names {names} must name each class folder found under {root} once: "
                                  f"{sorted(set(class_of.values()))}")
        if cfg.class_names is None:
            self.info.features["label"].names = names
        by_split = {split: [] for split in files.SPLITS}
        masks = MaskIndex(os.path.join(root, MASKS_FOLDER))
        for folder_name in sorted(folders):
            paths = [p for folder in folders[folder_name] for p in files.list_images(folder)]
            if not paths:
                raise files.DataError(f"class folder {folders[folder_name][0]} holds no images "
                                      f"(extensions {', '.join(files.IMAGE_EXTENSIONS)})")
            label = names.index(class_of[folder_name])
            for path in paths:
                group = f"{folder_name}/{files.group_name(files.stem(path), cfg.group_pattern)}"
                by_split[files.split_of(group, cfg.split_fractions)].append(
                    (path, label, group, masks.find(folder_name, files.stem(path))))
        return {split: self._generate_examples(items, root)
                for split, items in files.non_empty(by_split, root).items()}

    def _read(self, path: str, mask_path: str | None):
        cfg = self.builder_config
        image = files.read_image(path)
        if mask_path is None:
            return image, np.zeros(image.shape[:2], bool)
        mask = files.read_binary_mask(mask_path, threshold=cfg.mask_threshold, crack_value=cfg.crack_value,
                                       levels_seen=self.mask_levels, image=(path, image))
        files.check_same_size(image, mask, path, mask_path)
        return image, mask

    def _generate_examples(self, items, root: str):
        for path, label, group, mask_path in items:
            read = self.bad_files.guard(self._read, path, mask_path)
            if read is None:
                continue
            image, mask = read
            relative = os.path.relpath(path, root)
            yield relative, {
                "image": files.encode_png(image),
                "mask": files.encode_png(mask),
                "has_mask": mask_path is not None,
                "label": label,
                "source": group,
                "file": relative,
            }


class MaskIndex:
    """The masks under masks/: found as masks/<class folder>/<stem>.* or, if unique, masks/<stem>.*."""

    def __init__(self, folder: str):
        self.by_path: dict[str, str] = {}
        self.by_stem: dict[str, list[str]] = {}
        if not os.path.isdir(folder):
            return
        for directory, _, names in os.walk(folder):
            for name in sorted(names):
                if name.lower().endswith(files.IMAGE_EXTENSIONS):
                    path = os.path.join(directory, name)
                    self.by_path[os.path.splitext(os.path.relpath(path, folder))[0]] = path
                    self.by_stem.setdefault(files.stem(path), []).append(path)

    def find(self, class_folder: str, stem: str) -> str | None:
        path = self.by_path.get(f"{class_folder}/{stem}")
        if path is not None:
            return path
        candidates = self.by_stem.get(stem, [])
        if len(candidates) > 1:
            raise files.DataError(f"masks {candidates} all match image {class_folder}/{stem}; put each in "
                                  f"masks/<class folder>/ to say which image it belongs to")
        return candidates[0] if candidates else None
