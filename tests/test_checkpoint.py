"""Orbax checkpoints: exact round trip, clear refusal of an incompatible workdir."""

import chex
import jax
import pytest
from helpers import fresh_state_and_batch

from cfjax import checkpoint, parallel, steps
from cfjax.config import compare


def _state(config):
    """The state after one real step, so optimizer moments are non-zero."""
    mesh, models, state, batch = fresh_state_and_batch(config)
    state, _ = steps.make_gan_step(models, config, mesh)(state, parallel.shard_batch(batch, mesh))
    return state


def test_save_restore_is_exact(tmp_path, tiny_config):
    state = _state(tiny_config)
    ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
    ckpt.save(1, state, tiny_config)
    ckpt.wait()
    restored = ckpt.restore(checkpoint.abstract_like(state))
    chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
    chex.assert_trees_all_equal_structs(restored, state)  # Adam state keeps its named tuples
    assert ckpt.saved_config()["generator"]["width"] == tiny_config.generator.width
    ckpt.close()


def test_keeps_only_the_newest(tmp_path, tiny_config):
    state = _state(tiny_config)
    ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, state, tiny_config)
        ckpt.wait()
    assert ckpt.all_steps() == [2, 3]
    ckpt.close()


def test_incompatible_config_is_refused_by_field(tmp_path, tiny_config):
    state = _state(tiny_config)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(1, state, tiny_config)
    ckpt.wait()
    other = tiny_config.copy_and_resolve_references()
    other.generator.width = 12
    other.num_classes = 3
    with pytest.raises(checkpoint.CheckpointError) as error:
        ckpt.check_compatible(other)
    message = str(error.value)
    assert "generator.width: checkpoint has 8, config has 12" in message
    assert "num_classes: checkpoint has 2, config has 3" in message
    assert str(tmp_path) in message
    ckpt.check_compatible(tiny_config)  # the same config passes
    ckpt.close()


def test_restore_without_checkpoint_says_so(tmp_path, tiny_config):
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in"):
        ckpt.restore({})
    ckpt.close()


def test_config_differences_ignore_tuple_vs_list_and_resumable_fields(tiny_config):
    saved = tiny_config.to_dict()
    current = tiny_config.copy_and_resolve_references()
    current.discriminator.widths = list(current.discriminator.widths)
    current.num_steps, current.log_every, current.eval.batch_size = 100, 7, 4  # allowed on resume
    assert compare.config_differences(saved, current.to_dict()) == []
    current.data.image_size = 64
    current.loss.cycle_weight = 3.0
    assert compare.config_differences(saved, current.to_dict()) == [
        "data.image_size: checkpoint has 32, config has 64",
        "loss.cycle_weight: checkpoint has 10.0, config has 3.0",
    ]


def test_an_analysis_differs_in_its_evaluation_sections_too(tiny_config):
    """A run record's check: what a resume may change still may (the same run), but not what the explanation
    or attack ran with; JSON's lists still equal tuples."""
    saved = tiny_config.to_dict()
    current = tiny_config.copy_and_resolve_references()
    current.discriminator.widths = list(current.discriminator.widths)
    current.log_every = 7
    assert compare.analysis_differences(saved, current.to_dict()) == []
    current.eval.batch_size, current.seed = 4, tiny_config.seed + 1
    assert compare.analysis_differences(saved, current.to_dict()) == [
        f"eval.batch_size: record has {tiny_config.eval.batch_size}, command has 4",
        f"seed: record has {tiny_config.seed}, command has {tiny_config.seed + 1}",
    ]


def test_num_steps_is_structural_under_a_decaying_schedule(tiny_config):
    saved = tiny_config.to_dict()
    current = tiny_config.copy_and_resolve_references()
    current.optimizer.generator.schedule = saved["optimizer"]["generator"]["schedule"] = "cosine"
    current.num_steps = 100
    assert compare.config_differences(saved, current.to_dict()) == [
        f"num_steps: checkpoint has {tiny_config.num_steps}, config has 100"
    ]


def test_input_position_is_saved_and_checked_against_the_step(tmp_path, tiny_config):
    from cfjax.data import pipeline, synthetic

    state = _state(tiny_config)
    mesh = parallel.make_mesh()
    batches = pipeline.train_batches(pipeline.training_source(tiny_config), tiny_config, mesh)
    for _ in range(3):
        next(batches)
    ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=3)
    ckpt.save(3, state, tiny_config, data_state=batches.get_state())
    ckpt.save(4, state, tiny_config, data_state=batches.get_state())  # position of step 3, not 4
    ckpt.save(5, state, tiny_config)  # no position at all
    ckpt.wait()
    fresh = pipeline.train_batches(pipeline.training_source(tiny_config), tiny_config, mesh)
    ckpt.restore_position(3, fresh)
    assert fresh.next_index() == 3
    with pytest.raises(checkpoint.CheckpointError, match="stores the input position of batch 3, not 4"):
        ckpt.restore_position(4, fresh)
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint 5 .* has no input pipeline position"):
        ckpt.restore_position(5, fresh)
    # The position names the dataset's classes: a restored run names them without the dataset at hand.
    assert ckpt.saved_class_names(3) == synthetic.class_names(tiny_config.num_classes)
    assert ckpt.saved_class_names(5) is None  # an older cfjax's checkpoint: the names are unknown
    ckpt.save(6, state, tiny_config, data_state={**batches.get_state(), "dataset": {"classes": ["healthy", "rot"]}})
    ckpt.wait()
    assert ckpt.saved_class_names(6) == ("healthy", "rot")
    ckpt.close()


def test_input_position_over_another_dataset_is_refused(tmp_path, tiny_config):
    from cfjax.data import pipeline

    state = _state(tiny_config)
    mesh = parallel.make_mesh()
    batches = pipeline.train_batches(pipeline.training_source(tiny_config), tiny_config, mesh)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(0, state, tiny_config, data_state=batches.get_state())
    ckpt.wait()
    tiny_config.data.num_train = 32  # a different training split behind the same config name
    other = pipeline.train_batches(pipeline.training_source(tiny_config), tiny_config, mesh)
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot restore its input position: .*'examples': 64"):
        ckpt.restore_position(0, other)
    for b in (batches, other):
        b.close()
    ckpt.close()
