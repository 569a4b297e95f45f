"""`crack_segmentation`: crack photographs with binary masks, as full images and as a patch view.

Splits `train`, `validation`, `test` hold full images; `train_patches`, `validation_patches` and
`test_patches` hold the labelled crops of the same images (see `cfjax.data.patches`). Images are
assigned to splits by a hash of their *source photo*, so no photo (nor any patch of it) appears in
two splits, whatever folders the files were shipped in.
"""

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from cfjax.data import patches as patch_view
from cfjax.data.builders import base, files

LABELS = ("no_crack", "crack")


@dataclasses.dataclass(eq=False)
class CrackConfig(tfds.core.BuilderConfig):
    """Where the files lie under the manual folder and how to read their masks and patches."""

    image_dirs: tuple = ("images",)
    mask_dirs: tuple = ("masks",)
    mask_threshold: int | None = 127  # crack where mask > threshold (anti-aliased or 0/255 masks)
    crack_value: int | None = None  # crack where mask == value (label maps); overrides the threshold
    group_pattern: str | None = None  # regex whose first group names the source photo of a file stem
    split_fractions: tuple = (0.7, 0.15, 0.15)
    patch_size: int = 64
    train_patch_stride: int = 32  # overlapping crops multiply the training patches
    eval_patch_stride: int = 64
    min_crack_fraction: float = 0.02
    margin: int = 16


CONFIGS = (
    CrackConfig(
        name="sut", description="SUT-Crack segmentation: images/N.jpg and masks/N.png (anti-aliased RGB).",
    ),
    CrackConfig(
        name="crack500",
        description="CRACK500-style 360x360 crops: images/N.jpg and masks/N.png with values {0, 255}.",
    ),
    CrackConfig(
        name="uav75",
        description="UAV75 concrete: {train,val,test}_img/ and _lab/ label maps, 255 = crack, 204 = formwork "
                    "(background here). Re-split by drone photo: the shipped folders share photos.",
        image_dirs=("train_img", "val_img", "test_img"),
        mask_dirs=("train_lab", "val_lab", "test_lab"),
        mask_threshold=None,
        crack_value=255,
        group_pattern=r"^(.*?\d+)",  # DSC00550 and DSC00550b are tiles of one photo
        min_crack_fraction=0.005,
    ),
    CrackConfig(
        name="folder",
        description="Your own data: an images/ folder and a masks/ folder with matching file stems.",
    ),
)

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Place the dataset's folders in the manual folder (--manual_dir) as they are distributed:
  sut:      images/*.jpg and masks/*.png (SUT-Crack, Mendeley Data doi:10.17632/gsbmknrhkv)
  crack500: images/*.jpg and masks/*.png (CRACK500 crops, github.com/fyangneil/pavement-crack-detection)
  uav75:    train_img/ train_lab/ val_img/ val_lab/ test_img/ test_lab/ (github.com/ben-z-original/uav75)
  folder:   images/ and masks/ with the same file stems (set mask_threshold or crack_value for your masks)
"""


class CrackSegmentation(base.ManualFolderBuilder):
    """Crack images with binary masks from a manual folder; needs no TensorFlow."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Full images and patch view, split by source photo."}
    BUILDER_CONFIGS = list(CONFIGS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self._image_mask_info(
            __doc__,
            label=tfds.features.ClassLabel(names=LABELS),
            source=tfds.features.Text(),  # the source photo's file stem
            position=tfds.features.Tensor(shape=(2,), dtype=np.int32),  # (y, x) of a patch
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        root = files.require_manual_dir(dl_manager.manual_dir, MANUAL_DOWNLOAD_INSTRUCTIONS,
                                        expect=cfg.image_dirs + cfg.mask_dirs)
        if len(cfg.image_dirs) != len(cfg.mask_dirs):
            raise files.DataError(f"image folders {cfg.image_dirs} and mask folders {cfg.mask_dirs} must pair up")
        by_split = {split: [] for split in files.SPLITS}
        for image_dir, mask_dir in zip(cfg.image_dirs, cfg.mask_dirs, strict=True):
            image_folder, mask_folder = os.path.join(root, image_dir), os.path.join(root, mask_dir)
            for image, mask in files.pair_by_stem(files.list_images(image_folder), files.list_images(mask_folder),
                                                  image_folder=image_folder, mask_folder=mask_folder):
                group = files.group_name(files.stem(image), cfg.group_pattern)
                by_split[files.split_of(group, cfg.split_fractions)].append((image, mask))
        by_split = files.non_empty(by_split, root)
        generators = {split: self._generate_examples(pairs, None) for split, pairs in by_split.items()}
        for split, pairs in by_split.items():
            stride = cfg.train_patch_stride if split == "train" else cfg.eval_patch_stride
            generators[f"{split}_patches"] = self._generate_examples(pairs, stride)
        return generators

    def _read_pair(self, image_path: str, mask_path: str):
        cfg = self.builder_config
        image = files.read_image(image_path)
        mask = files.read_binary_mask(mask_path, threshold=cfg.mask_threshold, crack_value=cfg.crack_value,
                                       levels_seen=self.mask_levels, image=(image_path, image))
        files.check_same_size(image, mask, image_path, mask_path)
        return image, mask

    def _generate_examples(self, pairs, patch_stride: int | None):
        """Full images when `patch_stride` is None, else the labelled patches of each image."""
        cfg = self.builder_config
        for image_path, mask_path in pairs:
            read = self.bad_files.guard(self._read_pair, image_path, mask_path)
            if read is None:
                continue
            image, mask = read
            name = files.stem(image_path)
            if patch_stride is None:
                yield name, _example(image, mask, int(mask.any()), name, (0, 0))
                continue
            for p in patch_view.grid_patches(mask, size=cfg.patch_size, stride=patch_stride,
                                             min_crack_fraction=cfg.min_crack_fraction, margin=cfg.margin):
                crop = np.s_[p.y:p.y + cfg.patch_size, p.x:p.x + cfg.patch_size]
                yield f"{name}@{p.y},{p.x}", _example(image[crop], mask[crop], p.label, name, (p.y, p.x))


def _example(image: np.ndarray, mask: np.ndarray, label: int, source: str, position) -> dict:
    return {
        "image": files.encode_png(image),
        "mask": files.encode_png(mask),
        "label": label,
        "source": source,
        "position": np.asarray(position, np.int32),
    }
