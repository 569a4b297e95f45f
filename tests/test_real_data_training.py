"""`train_and_evaluate` end to end on small prepared subsets of the real data in ../shared/data."""

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import REPO, shared_dataset
from data_helpers import copy_pairs, prepare

import cfjax
from cfjax import train
from cfjax.data import pipeline

sys.path.insert(0, str(REPO / "configs"))
import fruits  # noqa: E402


@pytest.mark.slow
@pytest.mark.real_data
def test_tiny_run_on_real_crack_patches_scores_masks(tmp_path, tiny_config):
    manual = copy_pairs(shared_dataset("sut_crack_seg"), tmp_path / "files", [str(i) for i in range(1, 11)])
    prepare("crack_segmentation/sut", manual, tmp_path / "data")
    tiny_config.data.name = "crack_segmentation/sut"
    tiny_config.data.data_dir = str(tmp_path / "data")
    results = train.train_and_evaluate(tiny_config, str(tmp_path / "run"))
    test = results["test"]
    assert test["num_crack_images"] > 0 and test["num_images"] > test["num_crack_images"]
    assert 0 <= test["iou_counterfactual"]["iou_mean"] <= 1  # 6 steps: G has barely begun to edit
    # Real cracks are dark: the classical baseline, which no training moves, finds them well above the
    # IoU of marking every pixel (the crack share, about 0.12 here); measured 0.41.
    dark = test["iou_dark_pixels"]
    assert dark["iou_mean"] > 0.25 and dark["num_images"] == test["num_crack_images"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test"]["num_images"] == test["num_images"]
    assert sorted(p.name for p in (tmp_path / "run" / "images").iterdir())  # grids were written


@pytest.mark.slow
@pytest.mark.real_data
def test_tiny_fruit_run_has_no_mask_scores(tmp_path):
    source = shared_dataset("fruits_fresh_rotten_224")
    manual = tmp_path / "files"
    for cls in ("freshapples", "rottenapples"):
        shutil.copytree(source / "train" / cls, manual / cls,
                        ignore=lambda folder, names: sorted(names)[30:])  # 30 photos per class
    prepare("fruit_defects/apples", manual, tmp_path / "data")
    config = fruits.get_config("tiny")
    config.data.data_dir = str(tmp_path / "data")
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["test"]["num_images"] > 0
    assert not any(key.startswith("iou_") for key in results["test"])
    # D's accuracy is that of the saved run on the test split's photos (other batch shapes: one image may
    # round to the other class).
    arrays = pipeline.evaluation_arrays(config, "test")
    assert results["test"]["num_images"] == len(arrays["label"])
    run = cfjax.restore(str(tmp_path / "run"))
    expected = np.mean(run.classify(arrays["image"]) == arrays["label"])
    assert results["test"]["d_accuracy"] == pytest.approx(expected, abs=1 / len(arrays["label"]) + 1e-6)


@pytest.mark.parametrize("variant", fruits.VARIANTS)
def test_fruit_config_variants_validate(variant):
    from cfjax.config.validation import validate_config

    config = fruits.get_config(variant)
    validate_config(config)
    assert config.name == ("fruits" if variant == "default" else f"fruits_{variant}")
    assert config.data.name == ("fruit_defects/all" if variant == "all" else "fruit_defects/apples")
    if variant != "default":  # each variant changes more than the name
        default = fruits.get_config("default")
        assert {**config.to_dict(), "name": None} != {**default.to_dict(), "name": None}
