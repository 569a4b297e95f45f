"""`train_and_evaluate` end to end on the tiny config: outputs, resumption, NaN handling."""

import json
import os

import chex
import jax
import numpy as np
import pytest

import cfjax
from cfjax import checkpoint, parallel, steps, train
from cfjax.data import pipeline
from cfjax.masks import maps as saliency

# `train_and_evaluate` end to end, several runs per test.
pytestmark = pytest.mark.slow


def _restore(workdir, config):
    """(step, state as numpy) of the newest checkpoint in `workdir`."""
    mesh = parallel.make_mesh()
    fresh = steps.make_init_fn(steps.build_gan_models(config), config, mesh)(jax.random.PRNGKey(0))
    ckpt = checkpoint.Checkpointer(str(workdir))
    step = ckpt.latest_step()
    state = jax.device_get(ckpt.restore(checkpoint.abstract_like(fresh)))
    ckpt.close()
    return step, state


def test_train_and_evaluate_writes_everything(tmp_path, tiny_config):
    results = train.train_and_evaluate(tiny_config, str(tmp_path))
    for name in ("results.json", "metrics.jsonl", "config.json"):
        assert (tmp_path / name).exists(), name
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tb"))
    pngs = sorted(os.listdir(tmp_path / "images"))
    assert "step_000006_class0.png" in pngs and "step_000006_class1.png" in pngs
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["step"] == tiny_config.num_steps
    test = saved["test"]
    # The scores are those of the saved networks on the test split: recomputed here through cfjax.restore
    # (other batch shapes: one image of the 16 may round to the other class).
    arrays = pipeline.evaluation_arrays(tiny_config, "test")
    images, labels = arrays["image"], arrays["label"]
    assert test["num_images"] == len(labels) == tiny_config.data.num_test
    assert test["num_crack_images"] == int((labels == 1).sum()) > 0
    run = cfjax.restore(str(tmp_path))
    targets = np.where(labels == 0, 1, 0)  # crack images toward "no crack", the others toward "crack"
    recomputed = {"d_accuracy": np.mean(run.classify(images) == labels),
                  "g_head_accuracy": np.mean(run.generator_classify(images) == labels),
                  "flip_rate": np.mean(run.classify(run.counterfactual(images, targets)) == targets)}
    for key, value in recomputed.items():
        assert test[key] == pytest.approx(value, abs=1 / len(labels) + 1e-6), key
    for method in ("counterfactual", "dark_pixels", "local_contrast"):
        assert test[f"iou_{method}"]["num_images"] == test["num_crack_images"]
    # The classical baselines do not depend on training: dark pixels at their tuned threshold, by hand.
    crack = labels == 1
    dark = np.asarray(saliency.darkness_saliency(images[crack]))
    predicted, truth = dark > test["iou_dark_pixels"]["threshold"], arrays["mask"][crack]
    iou = (predicted & truth).sum((1, 2)) / np.maximum((predicted | truth).sum((1, 2)), 1)
    assert test["iou_dark_pixels"]["iou_mean"] == pytest.approx(iou.mean(), abs=1e-5)
    assert 0.0 < test["iou_dark_pixels"]["iou_mean"] < 0.35  # dark pixels find cracks only in part
    assert results["test"] == test
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "train/d_loss" in line]
    assert [line["step"] for line in train_lines] == [2, 4, 6]
    for key in ("train/g_grad_norm", "train/d_param_norm", "train/flip_rate", "train/p_fake_real",
                "train/steps_per_sec", "train/d_acc_real"):
        assert key in train_lines[-1]
    assert any("validation/iou_counterfactual/iou_mean" in line for line in lines)


# Resumption after a crash is tested by killing real runs: tests/test_preemption.py.


def test_resuming_with_an_incompatible_config_fails_clearly(tmp_path, tiny_config):
    train.train_and_evaluate(tiny_config, str(tmp_path))
    tiny_config.generator.width = 16
    with pytest.raises(checkpoint.CheckpointError, match="generator.width: checkpoint has 8, config has 16"):
        train.train_and_evaluate(tiny_config, str(tmp_path))


def _poison_batch(monkeypatch, index: int) -> None:
    """Training batch `index` (0-based) comes out as NaN images."""
    original = pipeline.TrainBatches.__next__

    def poisoned(batches):
        current = batches.next_index()
        batch = original(batches)
        if current == index:
            batch["image"] = batch["image"] * np.nan  # keeps the batch's sharding
        return batch

    monkeypatch.setattr(pipeline.TrainBatches, "__next__", poisoned)


def test_nan_stops_training_and_keeps_the_last_checkpoint(tmp_path, tiny_config, monkeypatch):
    tiny_config.checkpoint_every = 2
    _poison_batch(monkeypatch, 4)
    expected = r"non-finite values at step 5 in: .*d_loss.*last good checkpoint is step 4"
    with pytest.raises(train.NonFiniteError, match=expected):
        train.train_and_evaluate(tiny_config, str(tmp_path))
    step, state = _restore(tmp_path, tiny_config)
    assert step == 4
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def test_skip_batch_passes_over_a_nan_batch_and_resumes_exactly(tmp_path, tiny_config, monkeypatch):
    """on_non_finite=skip_batch: the poisoned batch 3 is skipped, the run still makes num_steps updates,
    and the skip survives a resume (the saved input position counts it)."""
    tiny_config.on_non_finite = "skip_batch"
    tiny_config.checkpoint_every = 2
    _poison_batch(monkeypatch, 3)
    results = train.train_and_evaluate(tiny_config, str(tmp_path / "skipping"))
    assert results["step"] == tiny_config.num_steps
    lines = [json.loads(line) for line in (tmp_path / "skipping" / "metrics.jsonl").read_text().splitlines()]
    assert [line["train/skipped_batch"] for line in lines if "train/skipped_batch" in line] == [3]
    step, state = _restore(tmp_path / "skipping", tiny_config)
    assert step == tiny_config.num_steps and all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))

    # Interrupted after step 4 (checkpoint 4 holds 4 steps over 5 batches), then resumed: the same state.
    tiny_config.num_steps = 4
    train.train_and_evaluate(tiny_config, str(tmp_path / "resumed"))
    tiny_config.num_steps = 6
    train.train_and_evaluate(tiny_config, str(tmp_path / "resumed"))
    chex.assert_trees_all_equal(_restore(tmp_path / "resumed", tiny_config)[1], state)


def test_reading_finite_one_step_late_changes_nothing(tmp_path, tiny_config, monkeypatch):
    """The loop reads a step's `finite` flag after dispatching the next step, except at boundaries. With no
    boundary before the end, the run skips the same poisoned batch and ends in the same state, bit for bit,
    as a run that stops at every step."""
    tiny_config.on_non_finite = "skip_batch"
    _poison_batch(monkeypatch, 2)
    states, skipped = [], []
    for name, every in (("every_step", 1), ("lookahead", 1000)):
        for field in ("log_every", "image_every", "eval_every", "checkpoint_every"):
            tiny_config[field] = every
        train.train_and_evaluate(tiny_config, str(tmp_path / name))
        lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        skipped.append([line["train/skipped_batch"] for line in lines if "train/skipped_batch" in line])
        step, state = _restore(tmp_path / name, tiny_config)
        assert step == tiny_config.num_steps
        states.append(state)
    assert skipped == [[2], [2]]
    chex.assert_trees_all_equal(*states)


def test_training_wall_time_is_summed_over_the_processes_that_trained_the_run(tmp_path, tiny_config):
    """results.json's `wall_time_s` is the last process's; `training_wall_time_s` adds what the earlier ones
    spent up to the checkpoint it resumed from (saved with that checkpoint), so a run trained over several
    sessions still reports what it cost."""
    first_config = tiny_config.copy_and_resolve_references()
    first_config.num_steps = 4
    first = train.train_and_evaluate(first_config, str(tmp_path))
    assert first["training_wall_time_s"] == pytest.approx(first["wall_time_s"], abs=0.5)  # one process: the same
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    carried = ckpt.saved_training_time(4)
    ckpt.close()
    assert 0 < carried <= first["training_wall_time_s"]
    resumed = train.train_and_evaluate(tiny_config, str(tmp_path))  # on to tiny_config.num_steps = 6
    assert resumed["step"] == 6
    assert resumed["training_wall_time_s"] - resumed["wall_time_s"] == pytest.approx(carried, abs=0.5)


def test_a_checkpoint_without_a_training_time_leaves_the_total_unknown(tmp_path, tiny_config):
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    state = {"w": np.zeros(3, np.float32)}
    ckpt.save(1, state, tiny_config)  # as a cfjax before the record saved it
    ckpt.save(2, state, tiny_config, training_time_s=12.5)
    ckpt.wait()
    assert ckpt.saved_training_time(1) is None and ckpt.saved_training_time(2) == 12.5
    ckpt.close()
    assert train.TrainingClock(started=0.0, carried_s=None).total_s() is None
