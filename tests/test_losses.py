"""Each loss term against a value computed by hand on a tiny input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfjax import losses


def test_cross_entropy_by_hand():
    logits = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = jnp.array([0, 1])
    # -log(1/2) and -log(1/4)
    expected = (math.log(2.0) + math.log(4.0)) / 2
    assert float(losses.cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_discriminator_loss_by_hand():
    real = jnp.array([[0.0, 0.0, 0.0]])  # K = 2 plus fake: uniform, CE = log 3
    fake = jnp.array([[0.0, 0.0, math.log(2.0)]])  # p_fake = 2/4
    loss, terms = losses.discriminator_loss(real, jnp.array([1]), [fake, fake], fake_weight=0.5)
    assert float(terms["d_real_ce"]) == pytest.approx(math.log(3.0), rel=1e-6)
    assert float(terms["d_fake_ce"]) == pytest.approx(2 * math.log(2.0), rel=1e-6)
    assert float(loss) == pytest.approx(math.log(3.0) + 0.5 * 2 * math.log(2.0), rel=1e-6)


def test_generator_loss_by_hand():
    images = jnp.zeros((1, 2, 2, 1))
    counterfactual = images.at[0, 0, 0, 0].set(0.4)  # |x_hat - x| mean = 0.4 / 4 = 0.1
    cycle = images.at[0, 1, 1, 0].set(0.8)  # mean 0.2
    cf_logits = jnp.array([[0.0, 0.0, 0.0]])  # CE to target = log 3
    head_logits = jnp.array([[0.0, 0.0]])  # CE = log 2
    loss, terms = losses.generator_loss(
        cf_logits, jnp.array([0]), head_logits, jnp.array([1]), images, counterfactual, [cycle, cycle],
        adversarial_weight=2.0, cls_weight=3.0, cycle_weight=10.0, prox_weight=0.5,
    )
    assert float(terms["g_adv_ce"]) == pytest.approx(math.log(3.0), rel=1e-6)
    assert float(terms["g_head_ce"]) == pytest.approx(math.log(2.0), rel=1e-6)
    assert float(terms["g_cycle_l1"]) == pytest.approx(0.4, rel=1e-6)  # two cycles of 0.2
    assert float(terms["g_prox_l1"]) == pytest.approx(0.1, rel=1e-6)
    expected = 2 * math.log(3.0) + 3 * math.log(2.0) + 10 * 0.4 + 0.5 * 0.1
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_generator_loss_without_cycles_has_zero_cycle_term():
    images = jnp.zeros((1, 2, 2, 1))
    _, terms = losses.generator_loss(
        jnp.zeros((1, 3)), jnp.array([0]), jnp.zeros((1, 2)), jnp.array([1]), images, images, [],
        adversarial_weight=1.0, cls_weight=1.0, cycle_weight=10.0, prox_weight=10.0,
    )
    assert float(terms["g_cycle_l1"]) == 0.0


def test_binary_targets_are_the_other_class():
    labels = jnp.array([0, 1, 1, 0])
    targets = losses.sample_targets(jax.random.PRNGKey(0), labels, 2)
    np.testing.assert_array_equal(np.asarray(targets), [1, 0, 0, 1])


def test_multiclass_targets_uniform_over_other_classes():
    labels = jnp.full((20000,), 2)
    targets = np.asarray(losses.sample_targets(jax.random.PRNGKey(1), labels, 4))
    assert not np.any(targets == 2)
    counts = np.bincount(targets, minlength=4)[[0, 1, 3]] / len(targets)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.02)
