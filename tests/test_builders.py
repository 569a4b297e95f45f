"""TFDS builders on small real subsets of ../shared/data: counts, mask encodings, patch labels,
and splits that never share a source photo."""

import os
import shutil

import numpy as np
import pytest
from conftest import shared_dataset
from data_helpers import copy_pairs, prepare
from PIL import Image

from cfjax.data import prepare as prepare_lib
from cfjax.data import sources
from cfjax.data.builders import files
from cfjax.data.builders.fruit_defects import AUGMENTATION_PREFIXES

SUT_STEMS = [str(i) for i in range(1, 13)]


def _records(builder, split):
    if split not in builder.info.splits:  # a small subset may leave a split empty
        return []
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


def _builder(name, data_dir):
    return sources.open_builder(name, str(data_dir))


@pytest.fixture(scope="module")
def sut(tmp_path_factory):
    manual = copy_pairs(shared_dataset("sut_crack_seg"), tmp_path_factory.mktemp("sut_files"), SUT_STEMS)
    data_dir = tmp_path_factory.mktemp("sut_data")
    summary = prepare("crack_segmentation/sut", manual, data_dir)
    return manual, _builder("crack_segmentation/sut", data_dir), summary


@pytest.mark.real_data
def test_sut_full_images_are_split_by_photo_with_binarised_antialiased_masks(sut):
    manual, builder, summary = sut
    sources = {split: [r["source"].decode() for r in _records(builder, split)] for split in files.SPLITS}
    assert sorted(sum(sources.values(), [])) == sorted(SUT_STEMS)  # every photo, exactly once
    assert sum(summary["splits"][s]["examples"] for s in files.SPLITS) == len(SUT_STEMS)
    assert set(summary["splits"]) == set(files.SPLITS) | {f"{s}_patches" for s in files.SPLITS}
    record = _records(builder, "train")[0]
    raw = np.asarray(Image.open(manual / "masks" / f"{record['source'].decode()}.png"))
    assert raw.ndim == 3 and len(np.unique(raw[..., 0])) > 2  # RGB, anti-aliased: many grey levels
    np.testing.assert_array_equal(record["mask"][..., 0] > 0, raw[..., 0] > 127)
    assert set(np.unique(record["mask"])) <= {0, 255}
    assert record["label"] == 1  # every SUT photo holds a crack


@pytest.mark.real_data
def test_patches_never_cross_splits_and_their_labels_follow_the_masks(sut):
    manual, builder, _ = sut
    config = prepare_lib.builder_config("crack_segmentation/sut", {})[1]
    photos = {}
    for split in files.SPLITS:
        full = {r["source"].decode() for r in _records(builder, split)}
        patches = _records(builder, f"{split}_patches")
        assert {p["source"].decode() for p in patches} <= full  # a patch stays in its photo's split
        photos[split] = full
        masks = {}
        for p in patches:
            name = p["source"].decode()
            if name not in masks:
                masks[name] = np.asarray(Image.open(manual / "masks" / f"{name}.png"))[..., 0] > 127
            y, x = p["position"]
            size, margin = config.patch_size, config.margin
            np.testing.assert_array_equal(p["mask"][..., 0] > 0, masks[name][y:y + size, x:x + size])
            fraction = masks[name][y:y + size, x:x + size].mean()
            if p["label"] == 1:
                assert fraction >= config.min_crack_fraction
            else:
                surround = masks[name][max(y - margin, 0):y + size + margin, max(x - margin, 0):x + size + margin]
                assert not surround.any()
    assert not (photos["train"] & photos["test"]) and not (photos["train"] & photos["validation"])
    assert not (photos["validation"] & photos["test"])


@pytest.mark.real_data
def test_crack500_masks_are_read_as_zero_or_255(tmp_path):
    manual = copy_pairs(shared_dataset("crack500_crops_360"), tmp_path / "files", ["1", "2", "3", "5", "6", "7"])
    prepare("crack_segmentation/crack500", manual, tmp_path / "data")
    builder = _builder("crack_segmentation/crack500", tmp_path / "data")
    for split in files.SPLITS:
        for record in _records(builder, split):
            raw = np.asarray(Image.open(manual / "masks" / f"{record['source'].decode()}.png"))
            assert raw.ndim == 2 and set(np.unique(raw)) <= {0, 255}
            np.testing.assert_array_equal(record["mask"][..., 0] > 0, raw == 255)
            assert record["image"].shape == (360, 360, 3)


@pytest.mark.real_data
def test_uav75_keeps_cracks_drops_formwork_and_regroups_tiles_of_one_photo(tmp_path):
    source = shared_dataset("uav75")
    manual = tmp_path / "files"
    # DSC00550b ships in train, DSC00550 in test: tiles of one drone photo in two splits.
    picks = {"train": ["DSC00550b", "DSC00552", "DSC00552b"], "val": ["DSC00551"], "test": ["DSC00550"]}
    for folder, stems in picks.items():
        copy_pairs(source, manual, stems, image_dir=f"{folder}_img", mask_dir=f"{folder}_lab")
    prepare("crack_segmentation/uav75", manual, tmp_path / "data")
    builder = _builder("crack_segmentation/uav75", tmp_path / "data")
    split_of = {}
    for split in files.SPLITS:
        for record in _records(builder, split):
            name = record["source"].decode()
            split_of[name] = split
            folder = next(f for f, stems in picks.items() if name in stems)
            raw = np.asarray(Image.open(manual / f"{folder}_lab" / f"{name}.png"))
            assert raw.shape[-1] == 4  # RGBA label maps
            assert (raw[..., 0] == 204).any()  # the formwork label is present ...
            np.testing.assert_array_equal(record["mask"][..., 0] > 0, raw[..., 0] == 255)  # ... and not a crack
    assert sorted(split_of) == sorted(sum(picks.values(), []))
    assert split_of["DSC00550"] == split_of["DSC00550b"] and split_of["DSC00552"] == split_of["DSC00552b"]


@pytest.mark.real_data
def test_folder_config_reads_a_users_label_map_with_a_crack_value(tmp_path):
    manual = copy_pairs(shared_dataset("sut_crack_seg"), tmp_path / "files", ["1", "2", "3"])
    (manual / "images").rename(manual / "photos")
    (manual / "masks").rename(manual / "labels")
    for mask in (manual / "labels").iterdir():  # re-encode: crack = 7, everything else 0 or 3
        binary = np.asarray(Image.open(mask))[..., 0] > 127
        label_map = np.where(binary, 7, 3).astype(np.uint8)
        label_map[:4] = 0
        Image.fromarray(label_map).save(mask)
    prepare("crack_segmentation/folder", manual, tmp_path / "data",
            overrides={"image_dirs": ("photos",), "mask_dirs": ("labels",), "crack_value": 7})
    builder = _builder("crack_segmentation/folder_custom", tmp_path / "data")
    records = [r for split in files.SPLITS for r in _records(builder, split)]
    assert len(records) == 3
    for record in records:
        raw = np.asarray(Image.open(manual / "labels" / f"{record['source'].decode()}.png"))
        np.testing.assert_array_equal(record["mask"][..., 0] > 0, raw == 7)


def _base(name: str) -> str:
    return files.group_name(os.path.splitext(name)[0], AUGMENTATION_PREFIXES)


@pytest.fixture(scope="module")
def fruit_files(tmp_path_factory):
    """Three base photos per class folder with all their augmented copies, from both shipped folders."""
    source = shared_dataset("fruits_fresh_rotten_224")
    manual = tmp_path_factory.mktemp("fruit_files")
    for cls in ("freshapples", "rottenapples", "freshbanana", "rottenbanana", "freshoranges", "rottenoranges"):
        names = sorted(p.name for folder in ("train", "test") for p in (source / folder / cls).iterdir())
        bases = sorted({_base(n) for n in names})[:3]
        for folder in ("train", "test"):
            (manual / folder / cls).mkdir(parents=True)
            for path in (source / folder / cls).iterdir():
                if _base(path.name) in bases:
                    shutil.copy(path, manual / folder / cls)
    return manual


@pytest.mark.real_data
def test_fruit_apples_split_by_base_photo_and_label_healthy_vs_defective(fruit_files, tmp_path):
    summary = prepare("fruit_defects/apples", fruit_files, tmp_path)
    builder = _builder("fruit_defects/apples", tmp_path)
    assert builder.info.features["label"].names == ["healthy", "defective"]
    files_on_disk = sorted(str(p.relative_to(fruit_files)) for p in fruit_files.rglob("*apples/*"))
    seen, split_of_base = [], {}
    for split in files.SPLITS:
        for record in _records(builder, split):
            name = record["file"].decode()
            seen.append(name)
            assert record["label"] == (1 if "rotten" in name else 0)
            base = record["source"].decode()
            assert split_of_base.setdefault(base, split) == split, f"{base} spans two splits"
    assert sorted(seen) == files_on_disk  # apples only, every copy of every base photo
    assert len(split_of_base) == 6
    counts = [entry["per_class"] for entry in summary["splits"].values()]
    assert sum(c["healthy"] + c["defective"] for c in counts) == len(files_on_disk)


@pytest.mark.real_data
def test_fruit_state_has_one_class_per_fruit_and_state(fruit_files, tmp_path):
    prepare("fruit_defects/fruit_state", fruit_files, tmp_path)
    builder = _builder("fruit_defects/fruit_state", tmp_path)
    names = builder.info.features["label"].names
    assert len(names) == 6
    labels = {names[r["label"]] for split in files.SPLITS for r in _records(builder, split)}
    assert labels == set(names)


def test_class_folders_takes_a_users_classes_and_optional_masks(tmp_path):
    manual = tmp_path / "mine"
    rng = np.random.default_rng(0)
    for cls in ("good", "scratched"):
        (manual / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(manual / cls / f"{cls}{i}.png")
    (manual / "masks").mkdir()
    mask = np.zeros((20, 24), np.uint8)
    mask[5:9, 3:20] = 255
    Image.fromarray(mask).save(manual / "masks" / "scratched1.png")
    prepare("class_folders", manual, tmp_path / "data")
    builder = _builder("class_folders", tmp_path / "data")
    assert builder.info.features["label"].names == ["good", "scratched"]
    records = {r["file"].decode(): r for split in files.SPLITS for r in _records(builder, split)}
    assert len(records) == 8
    assert records[os.path.join("scratched", "scratched1.png")]["has_mask"]
    np.testing.assert_array_equal(records[os.path.join("scratched", "scratched1.png")]["mask"][..., 0] > 0, mask > 0)
    assert not records[os.path.join("good", "good0.png")]["has_mask"]
