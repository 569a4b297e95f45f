"""Data-path logic on hand-made arrays and files: runs on any machine, with or without ../shared/data."""

import numpy as np
import pytest
from PIL import Image

from cfjax.config.validation import DATASET_BUILDERS
from cfjax.data import patches, sources
from cfjax.data import prepare as prepare_lib
from cfjax.data.builders import BUILDERS, files
from cfjax.data.builders.crack_segmentation import CONFIGS as CRACK_CONFIGS
from cfjax.data.builders.fruit_defects import AUGMENTATION_PREFIXES
from cfjax.errors import DataError


def test_grid_patches_on_a_hand_drawn_mask():
    mask = np.zeros((8, 12), bool)
    mask[1, 1:3] = True  # 2 of 16 pixels of patch (0, 0): 12.5 %, a crack patch
    mask[6, 8] = True  # 1 of 16 pixels of patch (4, 8): 6.25 %, below the bar; 1 px right of patch (4, 4)
    found = {(p.y, p.x): p for p in patches.grid_patches(mask, size=4, stride=4, min_crack_fraction=0.1, margin=1)}
    assert found[(0, 0)].label == patches.CRACK and found[(0, 0)].crack_fraction == 0.125
    assert {k for k, p in found.items() if p.label == patches.NO_CRACK} == {(0, 4), (0, 8), (4, 0)}
    assert (4, 8) not in found  # a little crack: neither class
    assert (4, 4) not in found  # crack-free, but a crack lies within its margin


def test_group_names_tie_augmented_copies_and_tiles_to_one_photo():
    for name in ("rotated_by_15_Screen Shot 2018", "vertical_flip_Screen Shot 2018",
                 "translation_saltandpepper_Screen Shot 2018", "Screen Shot 2018"):
        assert files.group_name(name, AUGMENTATION_PREFIXES) == "Screen Shot 2018"
    uav = next(c for c in CRACK_CONFIGS if c.name == "uav75").group_pattern
    assert {files.group_name(n, uav) for n in ("DSC00550", "DSC00550b", "DSC00550j")} == {"DSC00550"}
    assert files.group_name("12", None) == "12"
    with pytest.raises(DataError, match="group_pattern '\\(' is not a valid regular expression"):
        files.group_name("x", "(")


def test_split_by_hash_is_stable_and_follows_the_fractions():
    names = [f"photo{i}" for i in range(4000)]
    splits = [files.split_of(n, (0.7, 0.15, 0.15)) for n in names]
    shares = {s: splits.count(s) / len(names) for s in files.SPLITS}
    assert abs(shares["train"] - 0.7) < 0.03 and abs(shares["test"] - 0.15) < 0.03
    assert splits[:50] == [files.split_of(n, (0.7, 0.15, 0.15)) for n in names[:50]]  # no hidden state


def test_mask_encodings(tmp_path):
    antialiased = np.array([[0, 100, 128, 255]], np.uint8)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([antialiased] * 3, -1)).save(rgb)
    np.testing.assert_array_equal(files.read_binary_mask(str(rgb), threshold=127, crack_value=None),
                                  [[False, False, True, True]])
    label_map = tmp_path / "labels.png"
    Image.fromarray(np.stack([np.array([[0, 204, 255, 255]], np.uint8)] * 3 + [np.full((1, 4), 255, np.uint8)],
                             -1)).save(label_map)  # RGBA
    np.testing.assert_array_equal(files.read_binary_mask(str(label_map), threshold=None, crack_value=255),
                                  [[False, False, True, True]])
    zero_one = tmp_path / "zero_one.png"
    Image.fromarray(np.array([[0, 1, 1, 0]], np.uint8)).save(zero_one)
    with pytest.raises(DataError, match=r"zero_one.png has values up to 1 only, none above the threshold 127"):
        files.read_binary_mask(str(zero_one), threshold=127, crack_value=None)


def test_two_files_with_one_stem_are_named(tmp_path):
    for ext in (".jpg", ".png"):
        (tmp_path / f"a{ext}").write_bytes(b"")
    with pytest.raises(DataError, match=r"a.jpg and .*a.png share the name 'a'"):
        files.unique_stems(files.list_images(str(tmp_path)))


def test_validation_knows_every_builder_without_importing_tfds():
    assert set(DATASET_BUILDERS) == set(BUILDERS)


def _write_pair(folder, stem, crack_rows):
    rng = np.random.default_rng(len(stem))
    image = rng.integers(90, 200, (128, 128, 3), np.uint8)
    mask = np.zeros((128, 128), np.uint8)
    for row in crack_rows:
        image[row:row + 3] //= 3
        mask[row:row + 3] = 255
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{stem}.png")
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


def test_crack_folder_builder_on_generated_photos(tmp_path):
    manual = tmp_path / "files"
    stems = [f"p{i}" for i in range(12)]
    for i, stem in enumerate(stems):
        _write_pair(manual, stem, [10 + 5 * i])
    summary = prepare_lib.prepare("crack_segmentation/folder", str(manual), str(tmp_path / "data"))
    builder = sources.open_builder("crack_segmentation/folder", str(tmp_path / "data"))
    seen = []
    for split in files.SPLITS:
        if split not in builder.info.splits:
            continue
        source = builder.as_data_source(f"{split}_patches")
        for i in range(len(source)):
            record = source[i]
            seen.append(record["source"].decode())
            assert files.split_of(record["source"].decode(), (0.7, 0.15, 0.15)) == split
            crack_share = (record["mask"] > 0).mean()
            assert record["label"] == int(crack_share >= 0.02) and (record["label"] or crack_share == 0)
    assert set(seen) == set(stems)
    assert summary["builder_config"]["patch_size"] == 64


def test_rebuilding_with_other_settings_needs_overwrite(tmp_path):
    manual = tmp_path / "files"
    for i in range(6):
        _write_pair(manual, f"p{i}", [20])
    prepare_lib.prepare("crack_segmentation/folder", str(manual), str(tmp_path / "data"),
                        overrides={"margin": 4})
    with pytest.raises(DataError, match=r"prepared with other settings \(margin: 4\); pass --overwrite"):
        prepare_lib.prepare("crack_segmentation/folder", str(manual), str(tmp_path / "data"),
                            overrides={"margin": 8})
    with pytest.raises(DataError, match="--images does not apply to class_folders/default"):
        prepare_lib.builder_config("class_folders", {"image_dirs": ("x",)})


def _image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_class_folders_pool_split_folders_and_take_the_given_class_order(tmp_path):
    manual = tmp_path / "mine"
    for split in ("train", "test"):
        for cls in ("defect", "ok"):
            for i in range(3):
                _image(manual / split / cls / f"{split}{cls}{i}.png")
    prepare_lib.prepare("class_folders", str(manual), str(tmp_path / "data"),
                        overrides={"class_names": ("ok", "defect")})
    builder = sources.open_builder("class_folders/default_custom", str(tmp_path / "data"))
    assert builder.info.features["label"].names == ["ok", "defect"]  # ok is the normal class 0
    records = [builder.as_data_source(s)[i] for s in builder.info.splits for i in range(len(builder.as_data_source(s)))]
    assert len(records) == 12
    assert all((r["label"] == 0) == ("ok" in r["file"].decode().split("/")[1]) for r in records)


def test_class_folders_refuse_an_ambiguous_mask(tmp_path):
    manual = tmp_path / "mine"
    for cls in ("a", "b"):
        _image(manual / cls / "x.png")
    for sub in ("one", "two"):
        _image(manual / "masks" / sub / "x.png", 255)
    with pytest.raises(DataError, match=r"masks .* all match image a/x"):
        prepare_lib.prepare("class_folders", str(manual), str(tmp_path / "data"))


def test_full_crack_photos_cannot_be_cropped_for_training(tiny_config):
    from cfjax.config.validation import validate_config
    from cfjax.errors import ConfigError

    tiny_config.data.name = "crack_segmentation/sut"
    tiny_config.data.view = "full"
    tiny_config.data.fit = "crop"
    with pytest.raises(ConfigError, match="config.data.fit='crop': cannot be 'crop' with data.view='full'"):
        validate_config(tiny_config)
    tiny_config.data.fit = "resize"
    validate_config(tiny_config)
