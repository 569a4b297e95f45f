"""`cfjax.restore`: a run trained on 2 devices, restored (parameters only) on 1 device in a fresh process,
computes bit-identical outputs to the live model the training loop held, and a run trained on 1 device
restores on 2 with the same bits; bad workdirs and bad inputs are refused with the message the user
needs."""

import functools
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import experiment_script

import cfjax
from cfjax import checkpoint, kinds, parallel, saved_runs, steps, train
from cfjax.data import pipeline
from cfjax.errors import CheckpointError
from cfjax.masks import maps
from cfjax.models import p_fake, predict_class
from cfjax.restored_run import PER_DEVICE_BATCH

# Every test restores or trains a tiny run (most share one trained on two devices: a module fixture).
pytestmark = pytest.mark.slow

NUM_IMAGES = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GAN run trained on the 2 forced devices, and the final state the training loop saved."""
    import cracks

    config = cracks.get_config("tiny")
    workdir = tmp_path_factory.mktemp("run")
    saved = {}
    original_save = checkpoint.Checkpointer.save

    def spy(self, step, state, config, **kwargs):
        saved["state"] = jax.device_get(state)  # the live state, as the loop held it
        return original_save(self, step, state, config, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint.Checkpointer, "save", spy)
        train.train_and_evaluate(config, str(workdir))
    return config, str(workdir), saved["state"]


def _live_outputs(config, state, images: np.ndarray) -> dict:
    """The trained networks applied directly, batch split over both devices as in evaluation, at
    `PER_DEVICE_BATCH` images per device (XLA:CPU's kernels round differently at other batch shapes)."""
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 2
    task_models = steps.build_gan_models(config)
    generator, discriminator = task_models.generator, task_models.discriminator
    rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)

    @jax.jit
    def outputs(g_params, d_params, x):
        normal = np.zeros(x.shape[:1], np.int32)
        (x_hat, head), saliency = maps.averaged_counterfactual_map(
            functools.partial(generator.apply, {"params": g_params}, train=False), x, normal, config.saliency)
        logits = discriminator.apply({"params": d_params}, x, train=False)
        return {"counterfactual": x_hat, "generator_classify": head.argmax(-1),
                "classify": predict_class(logits, config.num_classes), "p_fake": p_fake(logits),
                "saliency": saliency}

    params = jax.device_put((state.g_ema_params, state.d_params), rep)
    chunk = PER_DEVICE_BATCH * mesh.devices.size
    padded = np.concatenate([images, images[:(-len(images)) % chunk]])
    results = [jax.device_get(outputs(*params, jax.device_put(padded[i:i + chunk], batch)))
               for i in range(0, len(padded), chunk)]
    return {name: np.concatenate([r[name] for r in results])[:len(images)] for name in results[0]}


def _analysis_outputs(run, images: np.ndarray) -> dict:
    return {"counterfactual": run.counterfactual(images, 0), "generator_classify": run.generator_classify(images),
            "classify": run.classify(images), "p_fake": run.p_fake(images), "saliency": run.saliency(images)}


ONE_DEVICE = """
import sys, numpy as np, jax, cfjax
sys.path.insert(0, sys.argv[4])
import cracks
from cfjax.train import train_and_evaluate
assert jax.device_count() == 1, jax.devices()
images = np.load(sys.argv[2])

def outputs(run):
    return dict(step=run.step, counterfactual=run.counterfactual(images, 0),
                generator_classify=run.generator_classify(images), classify=run.classify(images),
                p_fake=run.p_fake(images), saliency=run.saliency(images))

np.savez(sys.argv[3] + "/restored.npz", **outputs(cfjax.restore(sys.argv[1])))
# The reverse: a run trained here, on one device, for the parent to restore on two.
config = cracks.get_config("tiny")
config.num_steps = 2
train_and_evaluate(config, sys.argv[3] + "/one_device_run")
np.savez(sys.argv[3] + "/one_device.npz", **outputs(cfjax.restore(sys.argv[3] + "/one_device_run")))
"""


@pytest.mark.subprocess
def _assert_same_up_to_rounding(actual, expected, name: str) -> None:
    """Equal within float32 rounding (1e-6 on values in [0, 1]): bit-identical on the Intel machines this was
    first measured on, while on an AMD EPYC XLA:CPU rounded 32 of 36864 counterfactual values 1 ulp apart."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6, err_msg=name)


def test_runs_move_between_one_and_two_devices(trained, tmp_path, repo_root):
    """Trained on 2 devices, restored on 1 in a fresh process: the live model's bits. And back: trained
    on 1 device there, restored on 2 here: the bits the 1-device process computed."""
    config, workdir, state = trained
    images = pipeline.evaluation_arrays(config, "test")["image"][:NUM_IMAGES]
    live = _live_outputs(config, state, images)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", ONE_DEVICE, workdir, str(tmp_path / "images.npy"), str(tmp_path),
                    str(repo_root / "configs")], env=env, check=True, cwd=tmp_path, capture_output=True)
    restored = np.load(tmp_path / "restored.npz")
    assert int(restored["step"]) == config.num_steps
    for name, expected in live.items():
        _assert_same_up_to_rounding(restored[name], expected, name)

    one_device = np.load(tmp_path / "one_device.npz")
    back = cfjax.restore(str(tmp_path / "one_device_run"))
    assert back.step == 2 and "2 cpu device(s)" in repr(back)
    for name, expected in _analysis_outputs(back, images).items():
        _assert_same_up_to_rounding(expected, one_device[name], name)


def test_restore_here_matches_the_live_model_for_any_batch_size(trained):
    config, workdir, state = trained
    run = cfjax.restore(workdir)
    assert run.kind == "gan" and run.step == config.num_steps
    assert "step 6" in repr(run) and "2 cpu device(s)" in repr(run)
    images = pipeline.evaluation_arrays(config, "test")["image"][:NUM_IMAGES]
    live = _live_outputs(config, state, images)
    whole = _analysis_outputs(run, images)
    for name in live:
        _assert_same_up_to_rounding(whole[name], live[name], name)
    # One image, an odd batch: the same chunk shape, the padding dropped, the same values.
    _assert_same_up_to_rounding(run.p_fake(images[3]), live["p_fake"][3], "p_fake")
    _assert_same_up_to_rounding(run.saliency(images[:5]), live["saliency"][:5], "saliency")
    assert run._compiled("p_fake")._cache_size() == 1  # any batch size, one compile
    # G's EMA weights and D, restored alone: the optimizer states are not among the fields read.
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params), (state.g_ema_params, state.d_params))
    kind = kinds.make_kind(config, parallel.make_mesh())
    assert set(saved_runs.inference_target(kind)) == {"step", "g_ema_params", "d_params"}


def test_masks_use_the_tuned_threshold_when_explain_ran(trained, tmp_path):
    config, workdir, _ = trained
    run = cfjax.restore(workdir)
    images = pipeline.evaluation_arrays(config, "test")["image"][:NUM_IMAGES]
    maps = run.saliency(images)
    assert run.mask_threshold is None and "Otsu" in run.mask_rule
    otsu = run.mask(images)
    assert otsu.dtype == bool and otsu.shape == maps.shape and otsu.any() and not otsu.all()
    np.testing.assert_array_equal(run.mask(images, threshold=0.05), maps > 0.05)
    # A tuned threshold from --mode=explain on the same map becomes the default.
    explain_dir, other_dir = os.path.join(workdir, "explain"), os.path.join(workdir, "explain_crack_segmentation_uav75")
    os.makedirs(explain_dir, exist_ok=True)
    report = {"step": config.num_steps,
              "settings": {"saliency": config.saliency.to_dict()},
              "methods": {"counterfactual": {"thresholdings": {"tuned": {"threshold": 0.04}}}}}
    try:
        with open(os.path.join(explain_dir, "explain.json"), "w") as f:
            json.dump(report, f)
        tuned = cfjax.restore(workdir)
        assert tuned.mask_threshold == pytest.approx(0.04) and "validation" in tuned.mask_rule
        np.testing.assert_array_equal(tuned.mask(images), maps > np.float32(0.04))
        # ... but not for another checkpoint of the run, whose maps differ.
        earlier = cfjax.restore(workdir, step=3)
        assert earlier.step == 3 and earlier.mask_threshold is None and "tuned at step 6, not 3" in earlier.mask_rule
        # ... nor for a map averaged over other views, or one reported before views existed (the image
        # alone) while this run averages over 8.
        for saliency_settings in ({**config.saliency.to_dict(), "views": "identity"},
                                  {k: v for k, v in config.saliency.to_dict().items() if k != "views"}):
            with open(os.path.join(explain_dir, "explain.json"), "w") as f:
                json.dump({**report, "settings": {"saliency": saliency_settings}}, f)
            other = cfjax.restore(workdir)
            assert other.mask_threshold is None and "a different saliency map" in other.mask_rule
        # An explain of another dataset or folder (WORKDIR/explain_*) tuned on the same validation split: it
        # serves where WORKDIR/explain cannot (here: tuned on another map).
        os.makedirs(other_dir)
        with open(os.path.join(other_dir, "explain.json"), "w") as f:
            json.dump({**report, "methods": {"counterfactual": {"thresholdings": {"tuned": {"threshold": 0.03}}}}}, f)
        from_other = cfjax.restore(workdir)
        assert from_other.mask_threshold == pytest.approx(0.03) and other_dir in from_other.mask_rule
    finally:
        os.remove(os.path.join(explain_dir, "explain.json"))
        shutil.rmtree(other_dir, ignore_errors=True)


def test_readme_analysis_example_runs_as_shown(trained, repo_root, tmp_path, monkeypatch):
    """The README's five-line example, with runs/cracks pointing at the tiny run."""
    _, workdir, _ = trained
    readme = (repo_root / "README.md").read_text()
    section = readme[readme.index("## Analysis"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert len(code.strip().splitlines()) == 5
    (tmp_path / "runs").mkdir()
    os.symlink(workdir, tmp_path / "runs" / "cracks")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md#analysis", "exec"), namespace)  # noqa: S102 (the README example, as shown)
    assert namespace["masks"].shape[0] == namespace["p_fake"].shape[0] > 0


def test_restore_refuses_a_workdir_without_checkpoints_or_the_step(tmp_path, trained):
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*checkpoints: train the run first"):
        cfjax.restore(str(tmp_path / "never_trained"))
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 5 in .*; it holds steps \[3, 6\]"):
        cfjax.restore(trained[1], step=5)


def test_restore_refuses_a_config_that_did_not_write_the_run(trained):
    config, workdir, _ = trained
    other = config.copy_and_resolve_references()
    other.generator.width = config.generator.width * 2
    with pytest.raises(CheckpointError, match=r"incompatible config:\n  generator.width: checkpoint has"):
        cfjax.restore(workdir, config=other)


def test_bad_images_and_methods_the_run_lacks_are_named(trained, repo_root):
    config, workdir, _ = trained
    run = cfjax.restore(workdir)
    size = config.data.image_size
    with pytest.raises(ValueError, match=rf"images must be \(B, {size}, {size}, 3\).*got shape \(2, 8, 8, 3\)"):
        run.classify(np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"in \[0, 1\] \(divide 8-bit images by 255\)"):
        run.classify(np.full((1, size, size, 3), 255.0, np.float32))  # floats are on [0, 1]; uint8 on 0..255
    with pytest.raises(ValueError, match=r"target must be an integer class in 0..1"):
        run.counterfactual(np.zeros((1, size, size, 3)), target=2)
    with pytest.raises(ValueError, match=r"target must be an integer class in 0..1 .*got 0.7"):
        run.counterfactual(np.zeros((1, size, size, 3)), target=0.7)
    with pytest.raises(ValueError, match=r"target must be one class or one per image \(2\); got shape \(3,\)"):
        run.counterfactual(np.zeros((2, size, size, 3)), target=[0, 1, 1])
    with pytest.raises(ValueError, match="empty batch"):
        run.p_fake(np.zeros((0, size, size, 3)))


def test_a_classifier_run_offers_classify_only(tmp_path):
    import baselines

    config = baselines.get_config("classifier,tiny")
    train.train_and_evaluate(config, str(tmp_path))
    run = cfjax.restore(str(tmp_path))
    images = pipeline.evaluation_arrays(config, "test")["image"][:4]
    assert run.kind == "classifier" and run.classify(images).shape == (4,)
    with pytest.raises(ValueError, match=r"counterfactual\(\) needs a gan or robust_gan run; .* holds a classifier"):
        run.counterfactual(images, 0)
    with pytest.raises(ValueError, match=r"mask\(\) needs a gan, robust_gan or segmenter run"):
        run.mask(images)


def test_a_run_saved_before_the_saliency_section_and_balance_classes(trained, tmp_path):
    """An older run's config is upgraded where it is read: its map settings move to `saliency`, and it
    did not balance classes, so a current config must say so to resume it."""
    import shutil

    config, workdir, _ = trained
    old = tmp_path / "old"
    shutil.copytree(workdir, old)
    for metadata in (old / "checkpoints").glob("*/metadata/metadata"):
        saved = json.loads(metadata.read_text())
        written = saved["config"]
        del written["saliency"], written["data"]["balance_classes"], written["model"]
        written["eval"].update(saliency_reduce="max", contrast_radius=3)
        written["explain"]["blur_radius"] = 1
        metadata.write_text(json.dumps(saved))
    run = cfjax.restore(str(old))
    assert run.config.saliency.to_dict() == {"reduce": "max", "blur_radius": 1, "contrast_radius": 3,
                                             "views": "identity"}
    assert run.config.data.balance_classes is False and run.config.model == "gan"
    assert run.mask_threshold is None  # no explain.json here: per-image Otsu
    with pytest.raises(CheckpointError, match="data.balance_classes: checkpoint has False, config has True"):
        train.train_and_evaluate(config, str(old))
    unbalanced = config.copy_and_resolve_references()
    unbalanced.data.balance_classes = False
    assert train.train_and_evaluate(unbalanced, str(old))["step"] == config.num_steps  # finished: resumes as is


def test_the_share_of_red_images_per_class_reads_the_foreground_only():
    white = np.ones((4, 4, 3), np.float32)
    red, green = white.copy(), white.copy()
    red[1:3, 1:3] = (0.8, 0.2, 0.2)  # a red fruit on a white background: the background does not dilute it
    green[1:3, 1:3] = (0.3, 0.7, 0.2)
    images, labels = np.stack([red, red, green, green]), np.array([0, 1, 1, 1])
    with experiment_script("clean_errors") as clean_errors:
        assert clean_errors.red_share_by_class(images, labels, 3) == [1.0, pytest.approx(1 / 3), None]
