"""The jitted GAN step: learning on a fixed batch, data-parallel equivalence, no recompilation."""

import chex
import jax
import numpy as np
import pytest
from helpers import fresh_state_and_batch

from cfjax import parallel, steps


# Compiles the GAN step for one and two devices: minutes on a busy 2-core CPU.
@pytest.mark.slow
def test_two_devices_match_one_device(tiny_config):
    assert jax.device_count() >= 2, "conftest forces two CPU devices"
    # Adam turns gradients that are zero up to rounding (biases before instance-like norms) into
    # +-lr updates; a larger eps keeps the comparison about the math, not the rounding.
    for name in ("generator", "discriminator"):
        tiny_config.optimizer[name].eps = 1e-3
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:2]):
        chex.clear_trace_counter()
        mesh, models, state, batch = fresh_state_and_batch(tiny_config, devices)
        step = steps.make_gan_step(models, tiny_config, mesh, max_traces=1)
        for _ in range(3):  # several steps, one trace: no recompilation
            state, metrics = step(state, parallel.shard_batch(batch, mesh))
        assert len(state.g_params["image_head"]["kernel"].sharding.device_set) == len(devices)
        results.append((jax.device_get(state), jax.device_get(metrics)))
    (state_1, metrics_1), (state_2, metrics_2) = results
    chex.assert_trees_all_close(state_1, state_2, atol=2e-5, rtol=2e-4)
    chex.assert_trees_all_close(metrics_1, metrics_2, atol=2e-5, rtol=2e-4)


def test_step_is_sharded_and_donates_state(tiny_config):
    mesh, models, state, batch = fresh_state_and_batch(tiny_config, jax.devices()[:2])
    step = steps.make_gan_step(models, tiny_config, mesh)
    sharded = parallel.shard_batch(batch, mesh)
    assert sharded["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    old_leaf = state.d_params["Dense_0"]["kernel"]
    new_state, metrics = step(state, sharded)
    assert old_leaf.is_deleted(), "the input state should be donated"
    assert int(new_state.step) == 1
    for name in ("g_grad_norm", "d_grad_norm", "g_param_norm", "d_param_norm", "flip_rate", "p_fake_real"):
        assert np.isfinite(float(metrics[name])), name


@pytest.mark.slow
def test_a_few_hundred_steps_on_a_fixed_batch_learn(tiny_config):
    """On one fixed batch D learns the classes and spots the fakes, G's head learns the classes, and G
    edits its input until D's class readout of x_hat is the target (measured: flip rate 0.1 -> 1.0)."""
    tiny_config.generator.head_dropout = 0.0
    tiny_config.loss.num_cycles = 1
    chex.clear_trace_counter()
    mesh, models, state, batch = fresh_state_and_batch(tiny_config, jax.devices())
    step = steps.make_gan_step(models, tiny_config, mesh, max_traces=1)
    sharded = parallel.shard_batch(batch, mesh)
    history = []
    for _ in range(300):
        state, metrics = step(state, sharded)
        assert bool(metrics["finite"])  # synchronises each step, as the training loop does
        history.append(metrics)
    history = jax.device_get(history)
    first = {k: np.mean([m[k] for m in history[:10]]) for k in history[0]}
    last = {k: np.mean([m[k] for m in history[-10:]]) for k in history[0]}
    assert last["d_real_ce"] < 0.5 * first["d_real_ce"], (first["d_real_ce"], last["d_real_ce"])
    assert last["d_fake_ce"] < 0.5 * first["d_fake_ce"], (first["d_fake_ce"], last["d_fake_ce"])
    assert last["g_head_ce"] < 0.5 * first["g_head_ce"], (first["g_head_ce"], last["g_head_ce"])
    assert last["d_acc_real"] == 1.0
    assert last["edit_l1"] > 10 * first["edit_l1"], "G must have started to edit its input"
    assert first["flip_rate"] < 0.5 < 0.9 < last["flip_rate"], (first["flip_rate"], last["flip_rate"])
    assert all(bool(m["finite"]) for m in history)


def test_non_finite_update_is_not_applied(tiny_config):
    mesh, models, state, batch = fresh_state_and_batch(tiny_config, jax.devices())
    step = steps.make_gan_step(models, tiny_config, mesh)
    state, _ = step(state, parallel.shard_batch(batch, mesh))
    before = jax.device_get(state)
    batch["image"] = np.full_like(batch["image"], np.nan)
    after, metrics = step(state, parallel.shard_batch(batch, mesh))
    assert not bool(metrics["finite"])
    chex.assert_trees_all_equal(jax.device_get(after), before)


def test_batch_not_divisible_by_devices_is_refused(tiny_config):
    mesh = parallel.make_mesh(jax.devices()[:2])
    with pytest.raises(ValueError, match=r"config.batch_size=3 is not divisible by the 2 devices"):
        parallel.check_batch_size(3, mesh)


def _first_step_metrics(config):
    chex.clear_trace_counter()
    mesh, models, state, batch = fresh_state_and_batch(config)
    batch = parallel.shard_batch(batch, mesh)
    step = steps.make_gan_step(models, config, mesh, max_traces=1)
    state, first = step(state, batch)
    state, second = step(state, batch)  # a second step must not retrace
    assert bool(first["finite"]) and bool(second["finite"])
    return jax.device_get(first), jax.device_get(second)


# Compiles five GAN step variants.
@pytest.mark.slow
@pytest.mark.parametrize("num_classes, num_cycles", [(2, 0), (3, 2), (4, 1)])
def test_step_variants_run_without_recompiling(tiny_config, num_classes, num_cycles):
    """c = 0 and c = 2 cycles and K > 2 targets; with cycle outputs labelled fake or not."""
    tiny_config.num_classes = num_classes
    tiny_config.loss.num_cycles = num_cycles
    plain, plain_second = _first_step_metrics(tiny_config)
    if num_cycles == 0:
        assert plain_second["g_cycle_l1"] == 0.0
        return
    # G starts as the identity, so the cycle loss is 0 at step 1 and positive once G edits.
    assert plain["g_cycle_l1"] == 0.0 and plain_second["g_cycle_l1"] > 0.0
    tiny_config.loss.fake_on_cycles = True
    with_cycles, _ = _first_step_metrics(tiny_config)
    # At step 1 G is the identity, so every cycle image equals x_hat = x: each of the 2c - 1 extra
    # generated sets adds exactly the counterfactual's fake CE; the real term is unchanged.
    extra = with_cycles["d_fake_ce"] - plain["d_fake_ce"]
    assert extra == pytest.approx((2 * num_cycles - 1) * plain["d_fake_ce"], rel=1e-4)
    assert with_cycles["d_real_ce"] == pytest.approx(plain["d_real_ce"], rel=1e-5)
