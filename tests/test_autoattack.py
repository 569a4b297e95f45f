"""APGD, FAB-T, Square and their AutoAttack-style ensemble: golden cases on linear models, whose optimal
L-inf perturbation and minimal flipping norm are known in closed form (as in DeepMind's
adversarial-robustness tests), plus the ensemble's guarantees: members chosen by the class count, worst
case per example, one compilation across budgets, Square blind to gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfjax import attacks, parallel
from cfjax.attacks import auto_pgd, fab, objectives, square_search
from cfjax.attacks.fab import ETA

SHAPE = (6, 6, 3)
DIMS = int(np.prod(SHAPE))
BATCH = 16


def _linear(num_classes: int, seed: int = 0):
    """logits = x W + b; with `b` chosen so the batch straddles the boundaries. Returns (logits_fn, W, b, images)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(DIMS, num_classes)).astype(np.float32)
    images = rng.uniform(0.3, 0.7, size=(BATCH,) + SHAPE).astype(np.float32)  # the box never binds below
    b = -(images.reshape(BATCH, -1) @ w).mean(axis=0)
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w + b
    return logits_fn, w, b, images


def _minimal_linf(w, b, images, labels):
    """The smallest L-inf step letting a wrong class reach the true one: min_j margin_j / ||w_y - w_j||_1."""
    logits = images.reshape(len(images), -1) @ w + b
    norms = []
    for j in range(w.shape[1]):
        gap = logits[np.arange(len(labels)), labels] - logits[:, j]
        dual = np.abs(w[:, labels].T - w[:, j]).sum(axis=1)
        norms.append(np.where(labels == j, np.inf, gap / np.where(labels == j, 1.0, dual)))
    return np.min(norms, axis=0)


def _setup(num_classes):
    logits_fn, w, b, images = _linear(num_classes)
    labels = np.argmax(images.reshape(BATCH, -1) @ w + b, axis=1).astype(np.int32)  # clean: all correct
    return logits_fn, w, b, jnp.asarray(images), jnp.asarray(labels), _minimal_linf(w, b, images, labels)


def _clear_of(minimal, epsilon, slack=0.05):
    """Examples whose minimal norm is not within `slack` of the budget (where float rounding could decide)."""
    return np.abs(minimal - epsilon) > slack * epsilon


def test_apgd_ce_reaches_x_minus_epsilon_sign_w_on_a_linear_model():
    logits_fn, w, _, images, labels, minimal = _setup(2)
    epsilon = float(np.median(minimal))
    result = jax.jit(lambda x, y, k: auto_pgd.apgd(logits_fn, x, y, k, epsilon, num_classes=2, iterations=10))(
        images, labels, jax.random.PRNGKey(0))
    direction = np.sign(w[:, 1] - w[:, 0]).reshape(SHAPE)  # raises class 1 over class 0
    optimum = images + epsilon * np.where(labels == 0, 1.0, -1.0)[:, None, None, None] * direction
    robust = ~np.asarray(result.success)
    assert robust.any() and (~robust).any()
    np.testing.assert_allclose(result.adversarial[robust], optimum[robust], atol=1e-6)  # the optimum, exactly
    np.testing.assert_array_equal(result.success, minimal <= epsilon)


def test_fab_t_finds_the_minimal_norm_boundary_point():
    logits_fn, _, _, images, labels, minimal = _setup(2)
    result = jax.jit(lambda x, y: fab.fab_targeted(logits_fn, x, y, 1.0, num_classes=2, iterations=20))(images, labels)
    found = -np.asarray(result.objective)
    assert np.all(found >= minimal * (1 - 1e-4))  # nothing below the true minimum: every flip is real
    np.testing.assert_allclose(found, minimal, rtol=0.01)  # within 1 % of it (the reference overshoots by 5 %)
    assert np.all(np.asarray(attacks.distance(images, result.adversarial, "linf")) <= found + 1e-6)


def test_fab_t_crosses_a_boundary_closer_than_float32_resolves_a_pixel():
    """An image 1e-6 logits on the clean side of a linear boundary: the exact step to the plane (~1e-8)
    rounds away on pixels near 0.5, so without a minimum step the iterate never moves (a fixed point)."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=(DIMS, 2)).astype(np.float32)
    images = rng.uniform(0.3, 0.7, size=(BATCH,) + SHAPE).astype(np.float32)
    flat = images.reshape(BATCH, -1).astype(np.float64)
    shift = jnp.asarray(flat @ (w[:, 0] - w[:, 1]).astype(np.float64), jnp.float32)  # class 0's lead, unbiased

    def logits_fn(x):  # class 0 leads by 1e-6 at x = images
        lead = x.reshape(x.shape[0], -1) @ (w[:, 0] - w[:, 1]) - shift + 1e-6
        return jnp.stack([lead, jnp.zeros(x.shape[0])], axis=-1)

    labels = jnp.zeros(BATCH, jnp.int32)
    assert np.all(np.asarray(jnp.argmax(logits_fn(jnp.asarray(images)), -1)) == 0)  # clean: all correct
    result = jax.jit(lambda x, y: fab.fab_targeted(logits_fn, x, y, 1e-5, num_classes=2, iterations=5))(
        images, labels)
    assert np.all(np.asarray(result.success))  # every one crosses, within a few MIN_STEPs
    assert np.all(-np.asarray(result.objective) <= 2 * ETA * fab.MIN_STEP)


def test_fab_plane_projection_is_the_smallest_linf_step():
    rng = np.random.default_rng(3)
    points = jnp.asarray(rng.uniform(0.2, 0.8, (5, 7)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
    b = jnp.sum(w * points, axis=1) + jnp.asarray([0.3, -0.2, 0.01, 0.0, 1.0])
    step = fab.project_to_plane(points, w, b)
    reached = jnp.sum(w * (points + step), axis=1)
    np.testing.assert_allclose(reached, b, atol=1e-5)
    np.testing.assert_allclose(jnp.max(jnp.abs(step), axis=1),
                               jnp.abs(b - jnp.sum(w * points, axis=1)) / jnp.sum(jnp.abs(w), axis=1), rtol=1e-4)


def test_square_breaks_what_the_budget_allows_and_only_that():
    logits_fn, _, _, images, labels, minimal = _setup(2)
    epsilon = float(np.median(minimal))
    result = jax.jit(lambda x, y, k: square_search.square(logits_fn, x, y, k, epsilon, num_classes=2, queries=400))(
        images, labels, jax.random.PRNGKey(1))
    success = np.asarray(result.success)
    assert not success[minimal > epsilon].any()  # impossible flips are never reported
    assert success[minimal < 0.5 * epsilon].all()  # easy ones are all found without a gradient
    assert float(np.max(attacks.distance(images, result.adversarial, "linf"))) <= epsilon + 1e-6


def test_square_proposals_are_per_example_or_one_for_the_batch_as_autoattacks_port():
    shape, key = (BATCH,) + SHAPE, jax.random.PRNGKey(3)
    own = np.asarray(square_search.proposed_change(key, 0.2, shape, shared=False))
    shared = np.asarray(square_search.proposed_change(key, 0.2, shape, shared=True))
    assert own.shape == shape and shared.shape == (1,) + SHAPE
    for change in (own, shared):  # a square window of +-1 per channel, the same side everywhere
        window = np.abs(change).max(axis=-1) > 0
        side = int(round(np.sqrt(0.2 * SHAPE[0] * SHAPE[1])))
        assert (window.sum(axis=(1, 2)) == side * side).all()
        assert set(np.unique(change)) <= {-1.0, 0.0, 1.0}
    assert len({tuple(np.flatnonzero(w)) for w in np.abs(own).max(axis=-1) > 0}) > 1  # windows differ by example


def test_square_windows_start_where_the_reference_draws_them():
    """Every reference draws the corner with `randint(0, h - s)` (exclusive): windows cover rows 0 .. H - 2
    only. Covering the last row too made cfjax's Square 1.7 points stronger than torchattacks' on a trained D."""
    height, width = 8, 6
    covered_rows, covered_columns = np.zeros(height, bool), np.zeros(width, bool)
    for seed in range(200):
        change = np.asarray(square_search.proposed_change(jax.random.PRNGKey(seed), 0.05, (1, height, width, 1), True))
        window = change[0, :, :, 0] != 0
        covered_rows |= window.any(axis=1)
        covered_columns |= window.any(axis=0)
    np.testing.assert_array_equal(covered_rows, np.arange(height) < height - 1)
    np.testing.assert_array_equal(covered_columns, np.arange(width) < width - 1)


def _poisoned(logits_fn):
    """The same logits, with a NaN gradient: an attack that differentiates them ends up with NaN images."""

    @jax.custom_jvp
    def poisoned(x):
        return logits_fn(x)

    @poisoned.defjvp
    def _(primals, tangents):
        out, tangent = jax.jvp(logits_fn, primals, tangents)
        return out, tangent * jnp.nan  # still linear in the tangent, so reverse mode sees it too

    return poisoned


def test_square_reads_no_gradient():
    logits_fn, _, _, images, labels, minimal = _setup(2)
    epsilon = float(np.median(minimal))
    run = lambda f: jax.jit(lambda x, y, k: square_search.square(f, x, y, k, epsilon, num_classes=2, queries=50))(
        images, labels, jax.random.PRNGKey(2))
    clean, poisoned = run(logits_fn), run(_poisoned(logits_fn))
    np.testing.assert_array_equal(poisoned.adversarial, clean.adversarial)
    np.testing.assert_array_equal(poisoned.success, clean.success)
    # The poison is live: any gradient through these logits is NaN.
    gradient = jax.grad(lambda x: _poisoned(logits_fn)(x).sum())(images)
    assert np.isnan(np.asarray(gradient)).all()


@pytest.mark.parametrize("num_classes,joint,expected", [
    (2, False, ("apgd-ce", "fab-t", "square")),  # the reference's binary ensemble
    (2, True, ("apgd-ce", "apgd-dlr", "fab-t", "square")),  # D's K+1 = 3 logits allow DLR
    (3, False, ("apgd-ce", "apgd-dlr", "fab-t", "square")),
    (3, True, attacks.MEMBERS),
    (10, False, attacks.MEMBERS),
])
def test_members_follow_the_attacked_logit_count(num_classes, joint, expected):
    spec = attacks.EnsembleSpec(num_classes=num_classes, joint=joint)
    assert spec.valid_members() == expected
    assert attacks.member_names(spec) == ("clean",) + expected
    assert spec.num_targets == min(9, num_classes - 1)


def test_dlr_losses_refuse_too_few_logits():
    logits, labels = jnp.zeros((2, 2)), jnp.zeros(2, jnp.int32)
    with pytest.raises(ValueError, match="DLR loss needs >= 3"):
        objectives.dlr(logits, labels, 2, joint=False)
    with pytest.raises(ValueError, match="targeted DLR loss needs >= 4"):
        objectives.dlr_targeted(jnp.zeros((2, 3)), labels, labels + 1, 3, joint=False)
    with pytest.raises(ValueError, match="unknown 'pgd'"):
        attacks.EnsembleSpec(num_classes=2, members=("pgd",))


@pytest.mark.parametrize("members,exact", [
    (("apgd-t",), True), (("fab-t",), True), ((), True),  # one run per wrong class: each boundary is tried
    (("apgd-ce",), False), (("apgd-dlr",), False), (("square",), False),  # one direction: sound, not complete
])
def test_four_class_linear_model_exact_where_every_target_is_tried(members, exact):
    logits_fn, _, _, images, labels, minimal = _setup(4)
    epsilon = float(np.median(minimal))
    spec = attacks.EnsembleSpec(num_classes=4, iterations=20, queries=1000, members=members)
    result = jax.jit(lambda x, y, k: attacks.autoattack(logits_fn, x, y, k, epsilon, spec=spec))(
        images, labels, jax.random.PRNGKey(3))
    success, possible = np.asarray(result.success), minimal <= epsilon
    assert not (success & ~possible & _clear_of(minimal, epsilon, 0.02)).any()  # never an impossible break
    if exact:
        clear = _clear_of(minimal, epsilon, 0.02)
        np.testing.assert_array_equal(success[clear], possible[clear])
    else:
        assert success[minimal < 0.5 * epsilon].all()


@pytest.fixture(scope="module")
def cnn():
    from cfjax.models import ResNetClassifier

    network = ResNetClassifier(num_outputs=3, widths=(4, 8))
    images = jax.random.uniform(jax.random.PRNGKey(2), (8, 16, 16, 3))
    params = network.init(jax.random.PRNGKey(0), images)["params"]
    return lambda p, x: network.apply({"params": p}, x), params, images, jnp.arange(8, dtype=jnp.int32) % 3


SMALL = dict(iterations=4, targets=2, queries=20)


def test_the_ensemble_is_the_worst_case_of_its_members_and_compiles_once_across_budgets(cnn):
    apply_fn, params, images, labels = cnn
    spec = attacks.EnsembleSpec(num_classes=3, **SMALL)
    ensemble = attacks.make_ensemble(apply_fn, spec, max_traces=1)
    budgets = [0.0, 1 / 255, 4 / 255, 16 / 255]
    results = [ensemble(params, images, labels, jax.random.PRNGKey(4), eps) for eps in budgets]  # one trace
    accuracy = [1 - float(r.success.mean()) for r in results]
    assert accuracy == sorted(accuracy, reverse=True) and accuracy[-1] < accuracy[0]
    names = attacks.member_names(spec)
    for eps, result in zip(budgets, results):
        broken_by = np.asarray(result.broken_by)
        np.testing.assert_array_equal(broken_by >= 0, result.success)
        assert float(jnp.max(attacks.distance(images, result.adversarial, "linf"))) <= eps + 1e-6
        wrong = np.argmax(np.asarray(apply_fn(params, result.adversarial))[:, :3], -1) != np.asarray(labels)
        np.testing.assert_array_equal(wrong, result.success)  # every reported break is a real one
    for member in names[1:]:  # never weaker than any member alone
        alone = attacks.make_ensemble(apply_fn, attacks.EnsembleSpec(num_classes=3, members=(member,), **SMALL))(
            params, images, labels, jax.random.PRNGKey(4), 4 / 255)
        assert np.all(np.asarray(results[2].success) >= np.asarray(alone.success)), member
    assert set(np.asarray(results[-1].broken_by[results[-1].success])) <= set(range(len(names)))


def test_joint_ensemble_counts_fake_with_the_true_class_and_matches_data_parallel(cnn):
    apply_fn, params, images, labels = cnn  # 3 outputs read as K = 2 + fake
    labels = labels % 2
    spec = attacks.EnsembleSpec(num_classes=2, joint=True, **SMALL)
    single = attacks.make_ensemble(apply_fn, spec)(params, images, labels, jax.random.PRNGKey(5), 8 / 255)
    winner = np.argmax(np.asarray(apply_fn(params, single.adversarial)), -1)
    np.testing.assert_array_equal((winner < 2) & (winner != np.asarray(labels)), single.success)
    sharded = attacks.make_ensemble(apply_fn, spec, parallel.make_mesh())(
        params, images, labels, jax.random.PRNGKey(5), 8 / 255)
    np.testing.assert_array_equal(sharded.success, single.success)
    np.testing.assert_array_equal(sharded.broken_by, single.broken_by)
    chex.assert_trees_all_close(sharded.adversarial, single.adversarial, atol=1e-5)
