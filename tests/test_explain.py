"""`--mode=explain` end to end on tiny runs: the test split, a folder of real image/mask pairs, the
baselines, K > 2 classes, and the errors a user meets."""

import json
import shutil

import baselines
import cracks
import numpy as np
import pytest
from conftest import shared_dataset
from PIL import Image

import cfjax
from cfjax import train
from cfjax.errors import CheckpointError, DataError
from cfjax.explain.run import explain
from cfjax.masks import thresholds

# `--mode=explain` on tiny runs trained here.
pytestmark = pytest.mark.slow

GAN_METHODS = {"counterfactual", "d_grad_cam", "d_gradients", "d_integrated_gradients", "dark_pixels",
               "local_contrast", "counterfactual_nms", "counterfactual_min"}  # the last two: thin-mask options


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    config = cracks.get_config("tiny")
    workdir = str(tmp_path_factory.mktemp("gan"))
    return config, workdir, train.train_and_evaluate(config, workdir)


def test_explain_scores_every_method_and_thresholding_on_the_test_split(gan_run, tmp_path):
    config, workdir, trained = gan_run
    results = explain(config, workdir, out_dir=str(tmp_path))
    assert set(results["methods"]) == GAN_METHODS
    for method in results["methods"].values():
        assert set(method["thresholdings"]) == set(thresholds.THRESHOLDINGS)
        assert 0.0 <= method["auroc"] <= 1.0 and 0.0 <= method["ap"] <= 1.0
    # The classical baselines do not depend on training: on the synthetic cracks (about 5 % of a damaged
    # image) they rank crack pixels well above the rest (measured: AUROC 0.89 and 0.95, AP 0.44 and 0.51).
    for method, auroc in (("dark_pixels", 0.8), ("local_contrast", 0.9)):
        assert results["methods"][method]["auroc"] > auroc and results["methods"][method]["ap"] > 0.3, method
    assert results["data"]["num_damaged"] + results["data"]["num_empty"] == config.data.num_test
    # The tuned counterfactual IoU is the one training reported: same maps, same validation tuning.
    for method in ("counterfactual", "dark_pixels", "local_contrast"):
        ours = results["methods"][method]["thresholdings"]["tuned"]
        theirs = trained["test"][f"iou_{method}"]
        assert ours["iou_mean"] == pytest.approx(theirs["iou_mean"], abs=1e-6)
        assert ours["threshold"] == pytest.approx(theirs["threshold"])
    # Tolerant scores for every method: ODS at validation's tau, the test oracle, OIS, and clIoU at the tuned tau.
    for name, method in results["methods"].items():
        scores = method["tolerant"]
        for field in ("ods_f1", "ods_oracle_f1", "ois_f1", "ods_precision", "ods_recall"):
            assert 0.0 <= scores[field] <= 1.0, (name, field)
        assert scores["ods_f1"] <= scores["ods_oracle_f1"] + 1e-9, name
        assert 0.0 <= method["thresholdings"]["tuned"]["cliou"] <= 1.0, name
        assert set(method["validation"]) == {"iou_mean", "ods_f1"}, name
    saved = json.loads((tmp_path / "explain.json").read_text())
    assert saved["methods"] == results["methods"]
    table = (tmp_path / "explain.md").read_text()
    assert "F1 ODS, d=2 (τ val)" in table and "clIoU tuned, d=4" in table
    assert all(f"| {name} |" in table for name in GAN_METHODS)
    assert (tmp_path / "best.png").is_file() and (tmp_path / "worst.png").is_file()
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert len(figures) == min(config.explain.max_figures, results["data"]["num_damaged"])
    width = np.asarray(Image.open(figures[0])).shape[1]
    assert width > 5 * config.data.image_size  # x, x_hat, heatmap, predicted mask, truth side by side


def test_training_and_explain_score_one_map_when_it_is_blurred(tmp_path):
    """The `sut` variant's map (max over channels, 3x3 blur) is what training's evaluation reports too:
    results.json's `iou_counterfactual` and explain.json's `counterfactual` are one number."""
    config = cracks.get_config("tiny")
    config.num_steps = 3
    config.saliency.reduce, config.saliency.blur_radius = "max", 1
    trained = train.train_and_evaluate(config, str(tmp_path / "run"))
    results = explain(config, str(tmp_path / "run"), out_dir=str(tmp_path / "out"))
    ours = results["methods"]["counterfactual"]["thresholdings"]["tuned"]
    assert results["settings"]["saliency"] == {"reduce": "max", "blur_radius": 1, "contrast_radius": 2,
                                               "views": "dihedral"}
    assert ours["iou_mean"] == pytest.approx(trained["test"]["iou_counterfactual"]["iou_mean"], abs=1e-6)
    assert ours["threshold"] == pytest.approx(trained["test"]["iou_counterfactual"]["threshold"])


def _copy_real_pairs(destination, count=3):
    source = shared_dataset("sut_crack_seg")
    names = sorted(p.name for p in (source / "images").iterdir())[:count]
    (destination / "images").mkdir(parents=True)
    (destination / "masks").mkdir()
    for name in names:
        shutil.copy(source / "images" / name, destination / "images" / name)
        stem = name.rsplit(".", 1)[0]
        mask = next((source / "masks").glob(f"{stem}.*"))
        shutil.copy(mask, destination / "masks" / mask.name)
    return [name.rsplit(".", 1)[0] for name in names]


@pytest.mark.real_data
def test_explain_a_folder_of_real_photographs_tile_by_tile(gan_run, tmp_path):
    config, workdir, _ = gan_run
    stems = _copy_real_pairs(tmp_path / "photos", count=2)  # (each photograph is 64 tiles to explain)
    results = explain(config, workdir, folder=str(tmp_path / "photos"), out_dir=str(tmp_path / "out"))
    assert results["data"]["num_images"] == len(stems) and results["data"]["num_damaged"] == len(stems)
    assert results["settings"]["mask_rule"] == "> 127" and results["settings"]["tuned_on"] == "validation"
    assert set(results["methods"]) == GAN_METHODS
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").glob("*.png"))
    assert sorted(name.split("_iou")[0] for name in figures) == sorted(stems)
    # The 512x512 photographs are explained whole (64 tiles of 32 px each), not resized.
    assert np.asarray(Image.open(tmp_path / "out" / "figures" / figures[0])).shape[0] == 512


def test_folder_masks_as_label_maps_with_a_crack_value(gan_run, tmp_path):
    config, workdir, _ = gan_run
    (tmp_path / "f" / "images").mkdir(parents=True)
    (tmp_path / "f" / "masks").mkdir()
    image = (np.random.default_rng(0).uniform(0.6, 1.0, size=(40, 48, 3)) * 255).astype(np.uint8)
    image[10:12] = 0  # a black crack on a bright photo: the dark-pixels baseline finds it exactly
    label_map = np.zeros((40, 48), np.uint8)
    label_map[10:12, :] = 255  # crack
    label_map[20:30, :] = 204  # another class (formwork): background for the mask
    Image.fromarray(image).save(tmp_path / "f" / "images" / "a.png")
    Image.fromarray(label_map).save(tmp_path / "f" / "masks" / "a.png")
    results = explain(config, workdir, folder=str(tmp_path / "f"), crack_value=255, out_dir=str(tmp_path / "o"))
    assert results["settings"]["mask_rule"] == "== 255"
    assert results["data"]["num_damaged"] == 1
    dark = results["methods"]["dark_pixels"]
    assert dark["auroc"] == pytest.approx(1.0) and dark["ap"] == pytest.approx(1.0)  # every crack pixel darkest
    for name in ("fixed", "otsu", "tuned"):
        assert dark["thresholdings"][name]["iou_mean"] == pytest.approx(1.0), name
    # top_k keeps the validation split's mean damage share of each image, not this photo's 5 %: near 1.
    assert 0.75 < dark["thresholdings"]["top_k"]["iou_mean"] <= 1.0


def test_folder_errors_name_the_folder_or_file(gan_run, tmp_path):
    config, workdir, _ = gan_run
    with pytest.raises(DataError, match="does not exist"):
        explain(config, workdir, folder=str(tmp_path / "missing"))
    (tmp_path / "f" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="has no masks/ subfolder"):
        explain(config, workdir, folder=str(tmp_path / "f"))
    (tmp_path / "f" / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "f" / "images" / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "f" / "masks" / "a.png")
    with pytest.raises(DataError, match=r"mask .*a.png is 16x16 but its image .*a.png is 32x32"):
        explain(config, workdir, folder=str(tmp_path / "f"))


def test_explain_refuses_a_workdir_without_checkpoints_or_from_another_config(gan_run, tmp_path):
    config, workdir, _ = gan_run
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        explain(config, str(tmp_path / "empty"))
    assert not (tmp_path / "empty").exists()  # nothing created on the way
    other = cracks.get_config("tiny")
    other.generator.width = 16
    with pytest.raises(CheckpointError, match="generator.width: checkpoint has 8, config has 16"):
        explain(other, workdir)


@pytest.mark.parametrize("baseline, methods", [
    ("classifier", {"classifier_grad_cam", "classifier_gradients", "classifier_integrated_gradients",
                    "classifier_grad_cam_nms"}),
    ("unet", {"segmenter", "segmenter_nms"}),
])
def test_explain_scores_the_baselines_identically(tmp_path, baseline, methods):
    config = baselines.get_config(f"{baseline},tiny")
    trained = train.train_and_evaluate(config, str(tmp_path / "run"))
    results = explain(config, str(tmp_path / "run"))
    assert set(results["methods"]) == methods
    # Their maps use no config.saliency field, so none is recorded: a changed default makes no explanation
    # (experiments/harness.py) and no prediction (--mode=predict) of theirs stale.
    assert results["settings"]["saliency"] == {}
    assert cfjax.restore(str(tmp_path / "run")).saliency_settings == {}
    for method in results["methods"].values():
        assert set(method["thresholdings"]) == set(thresholds.THRESHOLDINGS)
        assert {"ods_f1", "ods_oracle_f1", "ois_f1"} <= set(method["tolerant"]) and "cliou" in method[
            "thresholdings"]["tuned"]
    if baseline == "unet":
        tuned = results["methods"]["segmenter"]["thresholdings"]["tuned"]
        assert tuned["iou_mean"] == pytest.approx(trained["test"]["iou_segmenter"]["iou_mean"], abs=1e-6)


def test_multi_class_masks_toward_every_class(tmp_path):
    config = cracks.get_config("tiny")
    config.num_classes = 3
    train.train_and_evaluate(config, str(tmp_path / "run"))
    results = explain(config, str(tmp_path / "run"), out_dir=str(tmp_path / "out"))
    summary = results["multiclass"]
    counts = np.array(summary["nearest_target_counts"])
    assert counts.shape == (3, 3) and counts.sum() == config.data.num_test
    assert np.all(np.diag(counts) == 0)  # the nearest target is never the image's own class
    assert np.array(summary["target_probability"]).shape == (3, 3)
    figure = np.asarray(Image.open(tmp_path / "out" / "multiclass.png"))
    assert figure.shape[0] > 3 * config.data.image_size  # rows of images of every class
