"""Every bad input of the data path gets one clear error naming the file, folder or field."""

import shutil

import numpy as np
import pytest
from conftest import shared_dataset
from data_helpers import copy_pairs, prepare
from PIL import Image

from cfjax import train
from cfjax.data import sources
from cfjax.errors import ConfigError, DataError, ManualDirError


@pytest.fixture
def sut_files(tmp_path):
    return copy_pairs(shared_dataset("sut_crack_seg"), tmp_path / "files", ["1", "2", "3", "4"])


def test_missing_manual_dir_prints_the_instructions(tmp_path):
    with pytest.raises(ManualDirError, match=r"(?s)does not exist.*SUT-Crack, Mendeley"):
        prepare("crack_segmentation/sut", tmp_path / "nowhere", tmp_path / "data")


def test_empty_manual_dir_prints_the_instructions(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManualDirError, match=r"(?s)is empty.*Place the dataset's folders"):
        prepare("crack_segmentation/sut", tmp_path / "empty", tmp_path / "data")


@pytest.mark.real_data
def test_manual_dir_without_the_layouts_folders_names_them(tmp_path, sut_files):
    with pytest.raises(ManualDirError, match="lacks train_img, val_img"):
        prepare("crack_segmentation/uav75", sut_files, tmp_path / "data")


@pytest.mark.real_data
def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path, sut_files):
    copy_pairs(shared_dataset("sut_crack_seg"), sut_files, ["5"])  # a second training photo
    corrupt = sut_files / "images" / "4.jpg"  # photos 4 and 5 hash to train, 1 to validation, 2 to test
    corrupt.write_bytes(corrupt.read_bytes()[:400])  # truncated JPEG
    with pytest.raises(DataError, match=f"cannot read image {corrupt}"):
        prepare("crack_segmentation/sut", sut_files, tmp_path / "data")
    summary = prepare("crack_segmentation/sut", sut_files, tmp_path / "data", skip_bad_files=True)
    assert len(summary["skipped_files"]) == 1 and str(corrupt) in summary["skipped_files"][0]
    assert sum(summary["splits"][s]["examples"] for s in ("train", "validation", "test")) == 4


@pytest.mark.real_data
def test_mask_of_another_size_names_both_files(tmp_path, sut_files):
    mask = sut_files / "masks" / "3.png"
    Image.open(mask).resize((256, 256)).save(mask)
    with pytest.raises(DataError, match=r"mask .*3.png is 256x256 but its image .*3.jpg is 512x512"):
        prepare("crack_segmentation/sut", sut_files, tmp_path / "data")


@pytest.mark.real_data
def test_image_without_a_mask_is_named(tmp_path, sut_files):
    (sut_files / "masks" / "4.png").unlink()
    with pytest.raises(DataError, match=r"image .*4.jpg has no mask named 4.\*"):
        prepare("crack_segmentation/sut", sut_files, tmp_path / "data")


def test_class_folder_without_images_is_named(tmp_path):
    for cls in ("good", "bad"):
        (tmp_path / "mine" / cls).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "mine" / "good" / "a.png")
    with pytest.raises(DataError, match=r"class folder .*mine/bad holds no images"):
        prepare("class_folders", tmp_path / "mine", tmp_path / "data")


@pytest.mark.real_data
def test_unknown_builder_config_lists_the_choices(tmp_path, sut_files):
    with pytest.raises(DataError, match=r"crack_segmentation has no config 'nope'; choose one of .*'sut'"):
        prepare("crack_segmentation/nope", sut_files, tmp_path / "data")
    with pytest.raises(DataError, match="unknown dataset 'cracks'"):
        prepare("cracks/sut", sut_files, tmp_path / "data")


@pytest.mark.real_data
def test_failed_rebuild_keeps_the_prepared_dataset(tmp_path, sut_files):
    data_dir = tmp_path / "data"
    before = prepare("crack_segmentation/sut", sut_files, data_dir)
    corrupt = sut_files / "images" / "1.jpg"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image"):
        prepare("crack_segmentation/sut", sut_files, data_dir, overwrite=True)
    builder = sources.open_builder("crack_segmentation/sut", str(data_dir))
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        s: e["examples"] for s, e in before["splits"].items()}
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".cfjax_prepare_")]


def test_training_on_an_unprepared_dataset_says_how_to_prepare_it(tmp_path, tiny_config):
    tiny_config.data.name = "crack_segmentation/sut"
    tiny_config.data.data_dir = str(tmp_path / "empty")
    expected = r"no prepared dataset crack_segmentation/sut in .*empty; prepare it once with\n.*cfjax.data.prepare"
    with pytest.raises(DataError, match=expected):
        train.train_and_evaluate(tiny_config, str(tmp_path / "run"))


def test_unknown_dataset_name_is_a_config_error(tmp_path, tiny_config):
    tiny_config.data.name = "imagenet"
    with pytest.raises(ConfigError, match="config.data.name='imagenet': must be 'synthetic' or a prepared"):
        train.train_and_evaluate(tiny_config, str(tmp_path))


@pytest.mark.real_data
def test_class_count_mismatch_names_the_field(tmp_path, tiny_config, sut_files):
    prepare("crack_segmentation/sut", sut_files, tmp_path / "data")
    tiny_config.data.name = "crack_segmentation/sut"
    tiny_config.data.data_dir = str(tmp_path / "data")
    tiny_config.num_classes = 3
    with pytest.raises(DataError, match=r"config.num_classes=3 but crack_segmentation/sut has 2 classes"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "run"))
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
