"""Random-access sources for every dataset cfjax trains on: the embedded synthetic set and any
dataset prepared by `python -m cfjax.data.prepare` (read back with `tfds` as array_record).

A source is a sequence of examples `{"image": (H, W, 3) uint8 or float32, "label": int,
"mask": (H, W) bool, "has_mask": bool}`; it is what grain reads from, by index. Images
without a mask (a classification set) carry an empty mask and `has_mask=False`.

Several prepared datasets pool into one source by naming them joined with "+"
(`crack_segmentation/sut+crack_segmentation/crack500`): their examples end to end (`PooledSource`).
"""

import dataclasses
import logging
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from cfjax.data import synthetic
from cfjax.errors import DataError

SYNTHETIC = "synthetic"
SYNTHETIC_SIZE_FIELDS = {"train": "num_train", "validation": "num_validation", "test": "num_test"}
POOL_SEPARATOR = "+"


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """One split: the examples and the class names (label i is `class_names[i]`; 0 is "normal")."""

    examples: Sequence
    class_names: tuple

    def __len__(self) -> int:
        return len(self.examples)


class ArraySource:
    """Stacked numpy arrays served one example at a time (the embedded dataset)."""

    def __init__(self, arrays: dict):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["label"])

    def labels(self) -> np.ndarray:
        return np.asarray(self.arrays["label"])

    def __getitem__(self, index: int) -> dict:
        example = {name: array[index] for name, array in self.arrays.items()}
        example["has_mask"] = True
        return example


class PooledSource:
    """Several sources' examples end to end, as one index space. Each split of a pool is the union of its
    datasets' splits, so training samples every dataset in proportion to its size (each example once per
    epoch), and grain's shuffle, saved position and host split work on it as on any one dataset."""

    def __init__(self, parts: Sequence):
        self.parts = tuple(parts)
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def labels(self) -> np.ndarray:
        return np.concatenate([np.asarray(part.labels(), np.int32) for part in self.parts])

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} of a pool of {len(self)}")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][index - int(self.offsets[part])]


def pooled_names(name: str) -> list[str]:
    """The datasets a `data.name` names: one, or several joined with "+" (a pool)."""
    return name.split(POOL_SEPARATOR)


class RecordSource:
    """A TFDS array_record split, with records reduced to image / label / mask."""

    def __init__(self, builder, split: str, name: str | None = None):
        self.builder, self.split = builder, split
        self.name = name or f"{builder.name}/{builder.info.config_name}"
        check_files(builder, split, self.name)
        self.data_source = builder.as_data_source(split)

    def __len__(self) -> int:
        return len(self.data_source)

    def labels(self) -> np.ndarray:
        """Every label, read without decoding images (for class balancing)."""
        records = undecoded(self.builder, self.split, ("image", "mask"))
        return np.asarray([records[i]["label"] for i in range(len(records))], np.int32)

    def __getitem__(self, index: int) -> dict:
        try:
            record = self.data_source[index]
        except RuntimeError as error:  # array_record's "Invalid Riegeli/records file"
            raise DataError(damaged_message(self.name, f"record {index} of split {self.split}",
                                            f"cannot be read ({error})", self.builder)) from error
        has_mask = bool(record.get("has_mask", True))
        mask = record["mask"][..., 0] > 0 if "mask" in record else np.zeros(record["image"].shape[:2], bool)
        return {"image": record["image"], "label": int(record["label"]), "mask": mask, "has_mask": has_mask}


def damaged_message(name: str, what: str, problem: str, builder) -> str:
    data_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.fspath(builder.data_path))))
    return (f"the prepared dataset {name} is damaged: {what} {problem}; prepare it again with "
            f"python -m cfjax.data.prepare --dataset={name} --manual_dir=PATH_TO_FILES --data_dir={data_dir} "
            f"--overwrite (and the options it was prepared with, listed in cfjax_summary.json)")


def check_files(builder, split: str, name: str) -> None:
    """DataError naming the file, when a file of `split` is missing, truncated or holds another number of
    records than the dataset's info says: cheap (each file's footer), and before a run reads a batch."""
    from array_record.python import array_record_module

    info = builder.info.splits[split]
    for path, expected in zip(info.filepaths, info.shard_lengths, strict=False):
        path = os.fspath(path)
        problem = None
        if not os.path.exists(path):
            problem = "is missing"
        else:
            try:
                reader = array_record_module.ArrayRecordReader(path)
                try:
                    found = reader.num_records()
                finally:
                    reader.close()
                if found != expected:
                    problem = f"holds {found} records, not the {expected} it was written with"
            except (RuntimeError, OSError, ValueError) as error:
                problem = f"cannot be read (truncated or overwritten: {str(error).splitlines()[0][:200]})"
        if problem:
            raise DataError(damaged_message(name, path, problem, builder))


def undecoded(builder, split: str, features: tuple = ("image",)):
    """A data source over `split` that leaves `features` as encoded bytes: counting labels or mask
    pixels then costs no image decoding."""
    import tensorflow_datasets as tfds

    skip = {name: tfds.decode.SkipDecoding() for name in features if name in builder.info.features}
    return builder.as_data_source(split, decoders=skip)


def split_name(config: ml_collections.ConfigDict, split: str, available) -> str:
    """The TFDS split to read: a dataset's patch view when it has one, unless `data.view` is "full"."""
    patches = f"{split}_patches"
    if config.data.view == "patches" and patches in available:
        return patches
    return split


def _synthetic_split(config: ml_collections.ConfigDict, split: str) -> SplitSource:
    data = config.data
    arrays = synthetic.generate_split(split, data[SYNTHETIC_SIZE_FIELDS[split]], seed=data.seed,
                                      image_size=data.image_size, num_classes=config.num_classes)
    return SplitSource(ArraySource(arrays), synthetic.class_names(config.num_classes))


def default_data_dir() -> str:
    return os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def prepared_path(name: str, data_dir: str | None) -> str | None:
    """The newest prepared version folder of NAME/CONFIG (or NAME, its only config) under data_dir."""
    data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    builder, _, config = name.partition("/")
    folder = os.path.join(data_dir, builder, config) if config else os.path.join(data_dir, builder)
    if not config and os.path.isdir(folder):
        configs = [c for c in sorted(os.listdir(folder))
                   if os.path.isdir(os.path.join(folder, c)) and not c[0].isdigit() and not c.startswith(".")]
        if len(configs) > 1:
            raise DataError(f"config.data.name={name!r} is ambiguous: {data_dir} holds "
                            f"{', '.join(f'{builder}/{c}' for c in configs)}")
        if configs:  # NAME alone for a builder with one prepared config
            folder = os.path.join(folder, configs[0])
    if not os.path.isdir(folder):
        return None
    versions = [v for v in os.listdir(folder) if os.path.exists(os.path.join(folder, v, "dataset_info.json"))]
    if not versions:
        return None
    newest = max(versions, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
    return os.path.join(folder, newest)


class _DropOpenCvAdvice(logging.Filter):
    """TFDS warns on every process start that OpenCV is absent; PIL decodes our PNGs fine."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "OpenCV is not installed" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropOpenCvAdvice())


def open_builder(name: str, data_dir: str | None):
    """A prepared dataset, read from its files alone (no builder code needed), or `DataError` saying how
    to prepare it."""
    import tensorflow_datasets as tfds

    path = prepared_path(name, data_dir)
    if path is None:
        where = data_dir or default_data_dir()
        raise DataError(
            f"config.data.name={name!r}: no prepared dataset {name} in {where}; prepare it once with\n"
            f"  python -m cfjax.data.prepare --dataset={name} --manual_dir=PATH_TO_FILES"
            + (f" --data_dir={data_dir}" if data_dir else "") + _known_configs_hint(name)
        )
    return tfds.builder_from_directory(path)


def _known_configs_hint(name: str) -> str:
    """For a config name the builder does not define: its own configs (customised ones are named by
    --custom_name when prepared, so an unknown name may still be one of those)."""
    from cfjax.data.builders import BUILDERS

    builder, _, config_name = name.partition("/")
    known = [c.name for c in BUILDERS[builder].BUILDER_CONFIGS] if builder in BUILDERS else []
    if not known or config_name in known:
        return ""
    return f"\n  ({builder} defines the configs {known}; {config_name!r} is none of them)"


def check_prepared(config: ml_collections.ConfigDict) -> None:
    """DataError, saying how to prepare it, when the config's dataset is not prepared: checked before a
    run writes anything."""
    if config.data.name != SYNTHETIC:
        for name in pooled_names(config.data.name):
            open_builder(name, config.data.data_dir)


def open_split(config: ml_collections.ConfigDict, split: str) -> SplitSource:
    """The examples of `split` ("train", "validation" or "test") of the dataset in `config.data`."""
    if config.data.name == SYNTHETIC:
        return _synthetic_split(config, split)
    if POOL_SEPARATOR in config.data.name:
        return _pooled_split(config, split)
    builder = open_builder(config.data.name, config.data.data_dir)
    name = split_name(config, split, builder.info.splits)
    if name not in builder.info.splits:
        raise DataError(f"dataset {config.data.name} has no split {name!r} (it has {sorted(builder.info.splits)})")
    class_names = tuple(builder.info.features["label"].names)
    if len(class_names) != config.num_classes:
        raise DataError(f"config.num_classes={config.num_classes} but {config.data.name} has "
                        f"{len(class_names)} classes {class_names}")
    return SplitSource(RecordSource(builder, name, config.data.name), class_names)


def with_dataset(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """A copy of `config` reading the dataset `name` (one of a pool, or another run's target)."""
    config = config.copy_and_resolve_references()
    config.data.name = name
    return config


def _pooled_split(config: ml_collections.ConfigDict, split: str) -> SplitSource:
    """`split` of every pooled dataset, end to end; they must share their classes (label i means one thing)."""
    parts = [open_split(with_dataset(config, name), split) for name in pooled_names(config.data.name)]
    names = pooled_names(config.data.name)
    for name, part in zip(names[1:], parts[1:], strict=True):
        if part.class_names != parts[0].class_names:
            raise DataError(f"config.data.name={config.data.name!r}: {name} has the classes {part.class_names}, "
                            f"{names[0]} has {parts[0].class_names}; a pool's datasets must share their classes")
    return SplitSource(PooledSource([part.examples for part in parts]), parts[0].class_names)


def as_arrays(source: SplitSource, transform) -> dict:
    """Every example of a (small, evaluation) split through `transform`, stacked into arrays."""
    examples = [transform(source.examples[i]) for i in range(len(source))]
    if not examples:
        raise DataError("an evaluation split is empty")
    return {name: np.stack([e[name] for e in examples]) for name in examples[0]}
