"""The two baselines: the plain classifier and the supervised U-Net train, checkpoint and score like the GAN."""

import json

import baselines
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfjax import checkpoint, losses, parallel, supervised, train
from cfjax.config import compare
from cfjax.data import synthetic


def _batch(config):
    data = synthetic.generate_split("train", config.batch_size, image_size=config.data.image_size,
                                    num_classes=config.num_classes)
    return {"image": data["image"], "label": data["label"], "mask": data["mask"]}


@pytest.mark.parametrize("baseline, loss_name", [("classifier", "ce"), ("unet", "bce")])
def test_a_baseline_fits_one_batch_without_recompiling(baseline, loss_name):
    config = baselines.get_config(f"{baseline},tiny")
    mesh = parallel.make_mesh()
    model = {"classifier": supervised.build_classifier, "unet": supervised.build_segmenter}[baseline](config)
    state = supervised.make_init_fn(model, config, mesh)(jax.random.PRNGKey(0))
    step = supervised.make_supervised_step(model, mesh, max_traces=1)
    batch = parallel.shard_batch(_batch(config), mesh)
    first = None
    for _ in range(25):
        state, metrics = step(state, batch)
        first = float(metrics[loss_name]) if first is None else first
    assert bool(metrics["finite"])
    assert float(metrics[loss_name]) < 0.7 * first
    assert int(state.step) == 25
    chex.clear_trace_counter()


@pytest.mark.slow
def test_adversarial_training_fits_pgd_examples_that_stay_in_the_ramped_budget():
    config = baselines.get_config("adversarial,tiny")
    mesh = parallel.make_mesh()
    model = supervised.build_classifier(config)
    epsilon, warmup = 4 / 255, config.num_steps // 3
    assert model.adversary.epsilon == pytest.approx(epsilon) and model.adversary.num_steps == 2
    assert model.adversary.warmup_steps == warmup >= 1
    state = supervised.make_init_fn(model, config, mesh)(jax.random.PRNGKey(0))
    batch = _batch(config)

    def largest_change(step):
        adversarial = supervised.adversarial_examples(model, state.params, batch["image"], batch["label"],
                                                      jax.random.PRNGKey(1), jnp.asarray(step))
        return np.abs(np.asarray(adversarial) - batch["image"]).max()

    full = largest_change(warmup + 5)
    assert epsilon / 2 < full <= epsilon + 1e-6
    assert largest_change(0) <= epsilon / warmup + 1e-6  # the first step attacks at 1/warmup of the budget
    step = supervised.make_supervised_step(model, mesh)
    sharded = parallel.shard_batch(batch, mesh)
    state, first = step(state, sharded)
    for _ in range(15):
        state, metrics = step(state, sharded)
    assert bool(metrics["finite"]) and float(metrics["ce"]) < float(first["ce"])


def test_soft_dice_loss_by_hand():
    truth = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    assert float(losses.soft_dice_loss(truth, truth, smooth=0.0)) == pytest.approx(0.0)
    assert float(losses.soft_dice_loss(1.0 - truth, truth, smooth=0.0)) == pytest.approx(1.0)
    assert float(losses.soft_dice_loss(jnp.full((2, 2), 0.5), truth, smooth=0.0)) == pytest.approx(1 - 2 * 1 / 4)


@pytest.mark.slow
@pytest.mark.parametrize("baseline, score", [("classifier", "accuracy"), ("unet", "iou_segmenter")])
def test_train_and_evaluate_runs_a_baseline(tmp_path, baseline, score):
    config = baselines.get_config(f"{baseline},tiny")
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["model"] == config.model and score in results["test"]
    assert "flip_rate" not in results["test"]  # GAN-only scores are not invented for a baseline
    assert json.loads((tmp_path / "results.json").read_text())["step"] == config.num_steps
    # A GAN config cannot reuse the baseline's workdir: the model field differs.
    gan = baselines.cracks.get_config("tiny")
    with pytest.raises(checkpoint.CheckpointError, match="model: checkpoint has"):
        train.train_and_evaluate(gan, str(tmp_path))


def test_runs_saved_before_the_model_field_still_count_as_gans(tiny_config):
    saved = tiny_config.to_dict()
    del saved["model"]
    assert compare.config_differences(saved, tiny_config.to_dict()) == []
    assert compare.config_differences(tiny_config.to_dict(), saved) == []  # an old saved config, reused
    tiny_config.model = "classifier"
    assert compare.config_differences(saved, tiny_config.to_dict()) == [
        "model: checkpoint has 'gan', config has 'classifier'"]


def test_segmentation_batches_carry_masks_through_augmentation():
    config = baselines.get_config("unet,tiny")
    from cfjax.data import pipeline
    source = pipeline.training_source(config)
    batch = pipeline.training_dataset(source, config, with_masks=True)[0]
    assert batch["mask"].shape == batch["image"].shape[:3] and batch["mask"].dtype == bool
    damaged = batch["label"] != 0
    assert batch["mask"][damaged].any(axis=(1, 2)).all() and not batch["mask"][~damaged].any()
    assert "mask" not in pipeline.training_dataset(source, config)[0]
    np.testing.assert_array_equal(batch["image"], pipeline.training_dataset(source, config)[0]["image"])
