"""PGD: golden cases on linear models (the optimal perturbation is known), the threat-model invariants,
monotonicity in iterations / restarts / budget, and one compilation per attack across a sweep."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cfjax import attacks, parallel
from cfjax.attacks import objectives
from cfjax.models import ResNetClassifier

SHAPE = (4, 4, 3)
# Tests of a network's attack that are not about the loop keep it rolled: compiling an unrolled loop costs
# more than running these tiny models. The default (unrolled on CPU) runs in the golden, monotonicity and
# rolled-vs-unrolled tests.
ROLLED = {"unroll": False}


def _linear(num_outputs=2, seed=0):
    """logits = [0, w.x + b] (binary) or W x + b; returns (apply_fn, params)."""
    rng = np.random.default_rng(seed)
    dims = int(np.prod(SHAPE))
    if num_outputs == 2:
        w = rng.normal(size=(dims,)).astype(np.float32)
        params = {"w": jnp.stack([jnp.zeros(dims), w], axis=1), "b": jnp.zeros(2)}
    else:
        params = {"w": jnp.asarray(rng.normal(size=(dims, num_outputs)), jnp.float32), "b": jnp.zeros(num_outputs)}
    apply_fn = lambda p, x: x.reshape(x.shape[0], -1) @ p["w"] + p["b"]
    return apply_fn, params


def _middle_images(batch=3):
    """Images well inside [0, 1], so only the ball constrains a small perturbation."""
    return jnp.full((batch,) + SHAPE, 0.5, jnp.float32) + jnp.linspace(-0.05, 0.05, batch)[:, None, None, None]


@pytest.mark.parametrize("start", ["zero", "uniform"])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_linf_attack_on_a_linear_model_finds_minus_epsilon_sign_w(start, loss):
    apply_fn, params = _linear()
    images, labels = _middle_images(), jnp.ones(3, jnp.int32)
    spec = attacks.AttackSpec(num_classes=2, norm="linf", loss=loss, start=start)
    result = attacks.make_attack(apply_fn, spec)(params, images, labels, jax.random.PRNGKey(0), 0.03, 0.01, 10)
    w = params["w"][:, 1].reshape(SHAPE)
    np.testing.assert_allclose(result.adversarial - images, np.broadcast_to(-0.03 * np.sign(w), images.shape),
                               atol=1e-6)


def test_l2_attack_on_a_linear_model_finds_minus_epsilon_unit_w():
    apply_fn, params = _linear()
    images, labels = _middle_images(), jnp.ones(3, jnp.int32)
    spec = attacks.AttackSpec(num_classes=2, norm="l2", start="zero")
    result = attacks.make_attack(apply_fn, spec)(params, images, labels, jax.random.PRNGKey(0), 0.5, 0.1, 8)
    w = params["w"][:, 1].reshape(SHAPE)
    np.testing.assert_allclose(result.adversarial - images,
                               np.broadcast_to(-0.5 * w / np.linalg.norm(w), images.shape), atol=1e-5)


def test_an_optax_step_reaches_the_same_optimum():
    apply_fn, params = _linear()
    images, labels = _middle_images(), jnp.ones(3, jnp.int32)
    spec = attacks.AttackSpec(num_classes=2, start="zero", optimizer=optax.adam(1.0))
    result = attacks.make_attack(apply_fn, spec)(params, images, labels, jax.random.PRNGKey(0), 0.03, 0.01, 10)
    w = params["w"][:, 1].reshape(SHAPE)
    np.testing.assert_allclose(result.adversarial - images, np.broadcast_to(-0.03 * np.sign(w), images.shape),
                               atol=1e-6)


def test_targeted_attack_reaches_its_target_on_a_linear_model():
    apply_fn, params = _linear(num_outputs=3)
    images = _middle_images(4)
    clean = jnp.argmax(apply_fn(params, images), -1)
    targets = (clean + 1) % 3
    spec = attacks.AttackSpec(num_classes=3, targeted=True, start="zero")
    result = attacks.make_attack(apply_fn, spec)(params, images, targets, jax.random.PRNGKey(0), 0.4, 0.05, 20)
    np.testing.assert_array_equal(jnp.argmax(apply_fn(params, result.adversarial), -1), targets)
    assert bool(result.success.all())


def _small_cnn(num_outputs=3, dropout=0.0):
    network = ResNetClassifier(num_outputs=num_outputs, widths=(8, 16), dropout=dropout)
    params = network.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)))["params"]
    return network, params


def _cnn_batch(batch=8, seed=2):
    images = jax.random.uniform(jax.random.PRNGKey(seed), (batch, 16, 16, 3))
    images = images.at[:2].set(jnp.round(images[:2]))  # pixels on the [0, 1] boundary too
    return images


@pytest.fixture(scope="module")
def cnn():
    network, params = _small_cnn()
    apply_fn = lambda p, x: network.apply({"params": p}, x)
    images = _cnn_batch()
    labels = jnp.arange(8, dtype=jnp.int32) % 3
    return apply_fn, params, images, labels


def test_zero_budget_gives_exactly_the_clean_images_and_accuracy(cnn):
    apply_fn, params, images, labels = cnn
    result = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=3, **ROLLED))(
        params, images, labels, jax.random.PRNGKey(0), 0, 0.01, 5)
    np.testing.assert_array_equal(result.adversarial, images)
    np.testing.assert_array_equal(result.success, jnp.argmax(apply_fn(params, images), -1) != labels)


@pytest.mark.parametrize("norm,epsilon", [("linf", 8 / 255), ("l2", 0.5)])
def test_adversarial_images_stay_in_the_ball_and_in_0_1(cnn, norm, epsilon):
    apply_fn, params, images, labels = cnn
    spec = attacks.AttackSpec(num_classes=3, norm=norm, restarts=2, **ROLLED)
    result = attacks.make_attack(apply_fn, spec)(params, images, labels, jax.random.PRNGKey(3), epsilon,
                                                 epsilon / 4, 6)
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
    assert float(attacks.distance(images, result.adversarial, norm).max()) <= epsilon * (1 + 1e-5) + 1e-6


def test_more_iterations_and_restarts_never_weaken_the_attack_and_a_sweep_compiles_once(cnn):
    apply_fn, params, images, labels = cnn
    key = jax.random.PRNGKey(4)
    objective = {}
    steps_list, epsilons = (0, 2, 5), (0, 1 / 255, 2 / 255)
    for restarts in (1, 3):
        chex.clear_trace_counter()  # chex counts traces per definition site; each attack is checked alone
        spec = attacks.AttackSpec(num_classes=3, restarts=restarts)
        # One compilation per iteration count where the loop is unrolled (CPU), one in all where it is not.
        attack = attacks.make_attack(apply_fn, spec, max_traces=len(steps_list) if spec.unrolled else 1)
        for steps in steps_list:
            for epsilon in epsilons:
                objective[restarts, steps, epsilon] = attack(params, images, labels, key, epsilon, epsilon / 4,
                                                             steps).objective
        attack(params, images, labels, key, 3 / 255, 1 / 255, steps_list[0])  # cached: no new trace
    for epsilon in epsilons:
        for restarts in (1, 3):
            assert (np.diff([objective[restarts, s, epsilon] for s in steps_list], axis=0) >= 0).all()
        for steps in steps_list:  # restart 0 of three is restart 0 of one, up to batched-convolution rounding
            assert (objective[3, steps, epsilon] >= objective[1, steps, epsilon] - 1e-5).all()


def test_a_rolled_loop_traces_once_for_every_budget_and_matches_the_unrolled_one(cnn):
    apply_fn, params, images, labels = cnn
    chex.clear_trace_counter()
    rolled = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=3, unroll=False), max_traces=1)
    unrolled = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=3, unroll=True))
    for steps in (1, 3):
        for epsilon in (1 / 255, 4 / 255):
            args = (params, images, labels, jax.random.PRNGKey(8), epsilon, epsilon / 4, steps)
            a, b = rolled(*args), unrolled(*args)
            np.testing.assert_allclose(a.adversarial, b.adversarial, atol=1e-5)
            np.testing.assert_array_equal(a.success, b.success)


def test_an_unrolled_attack_computes_each_iterate_once(cnn):
    """Unrolled, XLA:CPU would fuse the chain of all earlier updates into each iteration's consumers, so
    iteration k would recompute k signed-gradient steps (44 `sign` operations for 8 iterations); each
    iterate is materialised instead: one `sign` per iteration per restart in the compiled program, whether
    the budget is an argument (make_attack) or a constant (adversarial training without warm-up).
    A check of what the compiled program computes, timed nowhere: it stays with the attack's correctness
    tests in the fast tier, not with the benchmarks (perf)."""
    apply_fn, params, images, labels = cnn
    for restarts in (1, 2):
        attack = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=3, restarts=restarts, unroll=True))
        for steps in (2, 8):
            compiled = attack.lower(params, images, labels, jax.random.PRNGKey(0), 4 / 255, 1 / 255, steps).compile()
            assert compiled.as_text().count(" sign(") == steps, (restarts, steps)
    spec = attacks.AttackSpec(num_classes=3, unroll=True)
    constant_budget = jax.jit(lambda p, x, y, k: attacks.pgd(lambda v: apply_fn(p, v), x, y, k, spec=spec,
                                                             epsilon=4 / 255, step_size=1 / 255, num_steps=8))
    compiled = constant_budget.lower(params, images, labels, jax.random.PRNGKey(0)).compile()
    assert compiled.as_text().count(" sign(") == 8


def test_accuracy_never_rises_with_the_budget_on_a_linear_model():
    apply_fn, params = _linear(num_outputs=3, seed=5)
    images = jax.random.uniform(jax.random.PRNGKey(5), (64,) + SHAPE)
    labels = jnp.argmax(apply_fn(params, images), -1)
    chex.clear_trace_counter()
    attack = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=3, loss="margin"), max_traces=1)  # 10 steps
    accuracy = [float(1 - attack(params, images, labels, jax.random.PRNGKey(0), eps, eps / 4, 10).success.mean())
                for eps in np.linspace(0, 0.3, 7)]
    assert accuracy[0] == 1.0
    assert all(later <= earlier for earlier, later in itertools.pairwise(accuracy)), accuracy


def test_a_large_budget_drives_an_undefended_network_to_zero(cnn):
    apply_fn, params, images, _ = cnn
    labels = jnp.argmax(apply_fn(params, images), -1)  # clean accuracy 100% by construction
    result = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=3, **ROLLED))(
        params, images, labels, jax.random.PRNGKey(0), 0.5, 0.05, 20)
    assert float(result.success.mean()) == 1.0


def test_data_parallel_attack_matches_one_device(cnn):
    apply_fn, params, images, labels = cnn
    spec = attacks.AttackSpec(num_classes=3, restarts=2, **ROLLED)
    args = (params, images, labels, jax.random.PRNGKey(6), 4 / 255, 1 / 255, 4)
    single = attacks.make_attack(apply_fn, spec)(*args)
    mesh = parallel.make_mesh()
    sharded = attacks.make_attack(apply_fn, spec, mesh)(*args)
    assert sharded.adversarial.sharding.is_equivalent_to(parallel.batch_sharding(mesh), 4)
    np.testing.assert_allclose(sharded.adversarial, single.adversarial, atol=1e-6)
    np.testing.assert_array_equal(sharded.success, single.success)


def test_adaptive_attack_lowers_p_fake_and_needs_the_fake_logit(cnn):
    apply_fn, params, images, labels = cnn  # 3 outputs: read as K = 2 classes + fake
    labels = labels % 2
    args = (params, images, labels, jax.random.PRNGKey(7), 8 / 255, 2 / 255, 10)
    plain = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=2, **ROLLED))(*args)
    adaptive = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=2, detector_weight=10.0, **ROLLED))(*args)
    p_fake = lambda x: jax.nn.softmax(apply_fn(params, x), -1)[:, -1]
    assert float(p_fake(adaptive.adversarial).mean()) < float(p_fake(plain.adversarial).mean())
    with pytest.raises(ValueError, match="K\\+1 = 4 logits"):
        attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=3, detector_weight=1.0, **ROLLED))(*args)
    # The joint margin: every success also beats "fake", so p_fake falls below the plain attack's.
    joint = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=2, loss="joint_margin", **ROLLED))(*args)
    winner = jnp.argmax(apply_fn(params, joint.adversarial), -1)  # over all K+1 logits
    fooled_both = (winner < 2) & (winner != labels)
    np.testing.assert_array_equal(joint.success, fooled_both)  # success counts over all K+1 logits
    assert bool(fooled_both.any())
    assert float(p_fake(joint.adversarial).mean()) < float(p_fake(plain.adversarial).mean())


def test_joint_margin_counts_fake_with_the_true_class():
    logits = jnp.array([[2.0, 1.0, 3.0], [0.0, 4.0, 1.0], [1.0, 0.0, 2.0]])  # K = 2 real classes + fake
    labels = jnp.array([0, 0, 1])
    np.testing.assert_allclose(objectives.joint_margin(logits, labels, 2, targeted=False), [1 - 3, 4 - 1, 1 - 2])
    np.testing.assert_allclose(objectives.joint_margin(logits, labels, 2, targeted=True), [2 - 3, 0 - 4, 0 - 2])
    with pytest.raises(ValueError, match="class_loss takes 'ce' or 'margin'"):
        objectives.class_loss(logits[:, :2], labels, "joint_margin", targeted=False)


@pytest.mark.parametrize("fields,message", [
    (dict(norm="l1"), "norm must be one of"), (dict(loss="hinge"), "loss must be one of"),
    (dict(start="gauss"), "start must be one of"), (dict(restarts=0), "restarts must be >= 1"),
    (dict(restarts=2, start="zero"), "restarts > 1 need start='uniform'"),
    (dict(detector_weight=-1.0), "detector_weight must be >= 0"),
])
def test_bad_attack_specs_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        attacks.AttackSpec(num_classes=2, **fields)
