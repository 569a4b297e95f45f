"""Orbax checkpoints: exact round trip, clear refusal of an incompatible workdir."""

import chex
import jax
import pytest

from cfjax import checkpoint, parallel, steps
from helpers import fresh_state_and_batch


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
    assert checkpoint.config_differences(saved, current.to_dict()) == []
    current.data.image_size = 64
    current.loss.cycle_weight = 3.0
    assert checkpoint.config_differences(saved, current.to_dict()) == [
        "data.image_size: checkpoint has 32, config has 64",
        "loss.cycle_weight: checkpoint has 10.0, config has 3.0",
    ]


def test_num_steps_is_structural_under_a_decaying_schedule(tiny_config):
    saved = tiny_config.to_dict()
    current = tiny_config.copy_and_resolve_references()
    current.optimizer.generator.schedule = saved["optimizer"]["generator"]["schedule"] = "cosine"
    current.num_steps = 100
    assert checkpoint.config_differences(saved, current.to_dict()) == [
        f"num_steps: checkpoint has {tiny_config.num_steps}, config has 100"
    ]
