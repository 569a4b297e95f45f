"""The local-geometry probe, on linear models whose boundary distances and gradients are known exactly."""

import json
import os
import subprocess
import sys

import cracks
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import experiment_script
from PIL import Image

from cfjax import attacks, parallel, train
from cfjax.kinds import Readout
from cfjax.robustness import local_geometry

SHAPE = (8, 8, 3)
N = int(np.prod(SHAPE))


def linear_readout(weights: np.ndarray, bias: float = 0.0, fake_weights: np.ndarray | None = None) -> Readout:
    """Two classes: z_0 = w . x + b, z_1 = 0; with `fake_weights` a third, "fake" logit v . x (D's shape)."""
    def apply_fn(params, x):
        flat = x.reshape(len(x), -1)
        logits = [flat @ params["w"] + params["b"], jnp.zeros(len(x))]
        if "v" in params:
            logits.append(flat @ params["v"])
        return jnp.stack(logits, -1)

    params = {"w": jnp.asarray(weights.ravel()), "b": jnp.asarray(bias)}
    if fake_weights is not None:
        params["v"] = jnp.asarray(fake_weights.ravel())
    return Readout("linear", apply_fn, params, num_classes=2, has_detector=fake_weights is not None)


def probe(readout: Readout, images: np.ndarray, labels: np.ndarray) -> dict:
    return local_geometry.per_image(readout, {"image": images, "label": labels}, batch_size=4,
                                    mesh=parallel.make_mesh())


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.3, 0.7, (6,) + SHAPE).astype(np.float32)


def test_the_linf_distance_of_a_linear_model_is_where_the_optimal_attack_flips_it(images):
    weights = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    readout = linear_readout(weights, bias=0.5)
    labels = np.zeros(len(images), np.int32)
    margin = images.reshape(len(images), -1) @ weights.ravel() + 0.5
    labels[margin < 0] = 1  # every image right, at a known margin
    geometry = probe(readout, images, labels)
    np.testing.assert_allclose(geometry["margin"], np.abs(margin), rtol=1e-5)
    np.testing.assert_allclose(geometry["gradient_l1"], np.abs(weights).sum(), rtol=1e-5)
    distance = np.abs(margin) / np.abs(weights).sum()
    np.testing.assert_allclose(geometry["linf_distance"], distance, rtol=1e-5)
    np.testing.assert_allclose(geometry["l2_distance"], np.abs(margin) / np.linalg.norm(weights), rtol=1e-5)
    # The optimal L-inf step, sign(w) against the true class, stays inside [0, 1] here and lands on the boundary.
    direction = np.where(labels[:, None, None, None] == 0, -1.0, 1.0) * np.sign(weights)
    for scale, flips in ((0.99, False), (1.01, True)):
        attacked = images + scale * distance[:, None, None, None] * direction
        assert attacked.min() >= 0 and attacked.max() <= 1
        logits = readout.apply_fn(readout.params, jnp.asarray(attacked))
        np.testing.assert_array_equal(np.argmax(logits, -1) != labels, flips)


def test_first_order_accuracy_counts_right_images_beyond_each_budget(images):
    weights = np.full(SHAPE, 1.0 / N, np.float32)  # z_0 = mean(x) + b: the distance is |mean(x) + b|
    geometry = probe(linear_readout(weights, bias=-0.5), images, np.zeros(len(images), np.int32))
    summary = local_geometry.summarize(geometry, (0.0, 2.55, 255.0))  # in 1/255: 0, 0.01 and 1
    means = images.reshape(len(images), -1).mean(-1) - 0.5
    assert 0 < np.sum(means <= 0) < len(means)  # right and wrong images both
    assert summary["accuracy"] == pytest.approx(np.mean(means > 0))
    assert summary["first_order_accuracy"]["0"] == pytest.approx(np.mean(means > 0))  # the wrong ones count as broken
    np.testing.assert_array_equal(geometry["linf_distance"][means <= 0], 0.0)
    assert summary["first_order_accuracy"]["2.55"] == pytest.approx(np.mean(means >= 0.01))
    assert summary["first_order_accuracy"]["255"] == 0.0
    assert summary["median_of_correct"]["margin"] == pytest.approx(np.median(means[means > 0]), rel=1e-4)


def test_density_is_one_for_an_even_gradient_and_one_over_root_n_for_a_single_pixel(images):
    labels = np.zeros(len(images), np.int32)
    even = probe(linear_readout(np.ones(SHAPE, np.float32)), images, labels)
    np.testing.assert_allclose(even["density"], 1.0, rtol=1e-5)
    single = np.zeros(SHAPE, np.float32)
    single[3, 4, 1] = 1.0
    np.testing.assert_allclose(probe(linear_readout(single), images, labels)["density"], 1 / np.sqrt(N), rtol=1e-5)


def test_high_frequency_share_is_the_power_above_half_the_nyquist_radius():
    """Waves just inside and just outside radius 0.25 cycles/pixel, one per channel, and their mix."""
    size = 16  # frequencies in steps of 1/16: 3/16 and 5/16 lie either side of 0.25
    images = np.random.default_rng(6).uniform(0.3, 0.7, (4, size, size, 3)).astype(np.float32)
    rows = np.indices((size, size))[0]
    low, high = (np.cos(2 * np.pi * k * rows / size) for k in (3, 5))
    labels = np.zeros(len(images), np.int32)
    for channels, share in (((low, 0 * low, low), 0.0), ((0 * low, high, high), 1.0), ((low, high, 0 * low), 0.5)):
        weights = np.stack(channels, -1).astype(np.float32)
        np.testing.assert_allclose(probe(linear_readout(weights), images, labels)["high_frequency_share"], share,
                                   atol=1e-5)


def test_a_flat_decision_is_counted_not_taken_for_a_robust_one(images):
    geometry = probe(linear_readout(np.zeros(SHAPE, np.float32), bias=1.0), images, np.zeros(len(images), np.int32))
    assert np.all(np.isinf(geometry["linf_distance"])) and np.all(np.isnan(geometry["density"]))
    summary = local_geometry.summarize(geometry, (4.0,))
    assert summary["flat_gradient_share"] == 1.0 and summary["median_of_correct"]["density"] is None


def test_with_three_classes_the_distance_is_to_the_nearest_wrong_class(images):
    weights = np.random.default_rng(7).normal(size=(3, N)).astype(np.float32)
    weights[2] *= 0.05  # class 2's boundary is far in logits but its gradient is small: distances decide

    def apply_fn(params, x):
        return x.reshape(len(x), -1) @ params.T

    readout = Readout("linear3", apply_fn, jnp.asarray(weights), num_classes=3)
    logits = images.reshape(len(images), -1) @ weights.T
    labels = logits.argmax(-1).astype(np.int32)
    geometry = probe(readout, images, labels)
    expected = []
    for row, label in zip(logits, labels):
        others = [j for j in range(3) if j != label]
        expected.append(min((row[label] - row[j]) / np.abs(weights[label] - weights[j]).sum() for j in others))
    np.testing.assert_allclose(geometry["linf_distance"], expected, rtol=1e-4)
    assert geometry["correct"].all()


def test_the_fake_cosine_reads_whether_class_and_fake_share_directions(images):
    weights = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    other = np.random.default_rng(3).normal(size=SHAPE).astype(np.float32)
    other -= weights * np.sum(other * weights) / np.sum(weights * weights)  # orthogonal to w
    labels = np.zeros(len(images), np.int32)
    # Fake logit = -w . x: the fake log-odds rises exactly where the class-0 margin falls (up to the softmax
    # over the real logits, whose gradient also lies along w).
    aligned = probe(linear_readout(weights, fake_weights=-weights), images, labels)
    assert np.all(aligned["cosine_with_fake"] < -0.99)  # raising class 0's margin lowers "fake"
    both = probe(linear_readout(weights, fake_weights=-weights), images, np.arange(len(images), dtype=np.int32) % 2)
    np.testing.assert_allclose(both["cosine_with_fake"], np.where(np.arange(len(images)) % 2, 1.0, -1.0), atol=1e-5)
    probabilities = 1 / (1 + np.exp(-(images.reshape(len(images), -1) @ weights.ravel())))  # softmax of (w.x, 0)
    np.testing.assert_allclose(aligned["fake_gradient_l2"], (1 + probabilities) * np.linalg.norm(weights), rtol=1e-4)
    assert "cosine_with_fake" not in probe(linear_readout(weights), images, labels)
    independent = probe(linear_readout(weights, fake_weights=other * 50.0), images, labels)
    assert np.all(np.abs(independent["cosine_with_fake"]) < 0.5)


def test_the_fake_contrast_cosine_is_zero_by_construction_only_where_nothing_is_shared(images):
    """The log-odds cosine is negative even for a fake logit that reads nothing of the class (v = w / 2 makes
    the fake logit the two real ones' mean); the contrast's cosine is 0 there and +-1 where the fake
    readout is the class direction itself."""
    weights = np.random.default_rng(7).normal(size=SHAPE).astype(np.float32)
    readout = linear_readout(weights, fake_weights=weights / 2)
    labels = np.asarray(readout.apply_fn(readout.params, jnp.asarray(images)))[:, :2].argmax(-1).astype(np.int32)
    neutral = probe(readout, images, labels)
    np.testing.assert_allclose(neutral["cosine_with_fake_contrast"], 0.0, atol=1e-5)
    np.testing.assert_allclose(neutral["cosine_with_fake"], -1.0, atol=1e-5)  # construction alone
    other = np.random.default_rng(8).normal(size=SHAPE).astype(np.float32)
    other -= (other.ravel() @ weights.ravel()) / (weights.ravel() @ weights.ravel()) * weights  # orthogonal to w
    unrelated = probe(linear_readout(weights, fake_weights=weights / 2 + other), images, labels)
    np.testing.assert_allclose(unrelated["cosine_with_fake_contrast"], 0.0, atol=1e-5)
    shared = probe(linear_readout(weights, fake_weights=1.5 * weights), images, labels)
    sign = np.where(labels == 0, 1.0, -1.0)  # g = +w for class 0, -w for class 1; the contrast's gradient is +w
    np.testing.assert_allclose(shared["cosine_with_fake_contrast"], sign, atol=1e-5)
    np.testing.assert_allclose(shared["overlap_with_fake_contrast"], 1.0, atol=1e-5)


def test_a_counterfactual_edit_is_read_by_its_alignment_with_the_gradient_and_whether_it_flips(images):
    weights = np.random.default_rng(5).normal(size=SHAPE).astype(np.float32)
    readout = linear_readout(weights, bias=-float(images.reshape(len(images), -1).mean(0) @ weights.ravel()))
    labels = np.asarray(readout.apply_fn(readout.params, jnp.asarray(images))).argmax(-1).astype(np.int32)
    sign = np.where(labels == 0, 1.0, -1.0)[:, None, None, None]  # +w raises class 0's margin
    margin = np.abs(np.asarray(readout.apply_fn(readout.params, jnp.asarray(images)))[:, 0])
    steps = np.asarray([0.5, 2.0, 0.5, 2.0, 0.5, 2.0])[:, None, None, None]  # half-way, or twice past the boundary
    counterfactual = images - sign * steps * (margin / np.sum(weights ** 2))[:, None, None, None] * weights
    data = {"image": images, "label": labels, "counterfactual": counterfactual.astype(np.float32), "target": 1 - labels}
    geometry = local_geometry.per_image(readout, data, batch_size=4, mesh=parallel.make_mesh())
    np.testing.assert_allclose(geometry["edit_alignment"], 1.0, rtol=1e-5)  # straight down the gradient
    np.testing.assert_array_equal(geometry["counterfactual_reaches_target"], steps.ravel() > 1)
    assert local_geometry.summarize(geometry, (4.0,))["counterfactual_flip_rate"] == 0.5
    along = {**data, "counterfactual": (images + np.roll(counterfactual - images, 1, axis=1)).astype(np.float32)}
    shifted = local_geometry.per_image(readout, along, batch_size=4, mesh=parallel.make_mesh())
    assert np.all(np.abs(shifted["edit_alignment"]) < 0.5)  # an edit of the same size in another direction


def test_along_an_edit_the_first_flip_is_where_a_linear_margin_crosses_zero(images):
    """x + t (x-hat - x) leaves a linear model's class at t = margin / -(g . edit): found to within the
    bisection's 1/4096 of the path; an edit that never crosses is inf, not a made-up distance."""
    weights = np.random.default_rng(6).normal(size=SHAPE).astype(np.float32)
    readout = linear_readout(weights, bias=-float(images.reshape(len(images), -1).mean(0) @ weights.ravel()))
    logits = np.asarray(readout.apply_fn(readout.params, jnp.asarray(images)))
    labels = logits.argmax(-1).astype(np.int32)
    sign = np.where(labels == 0, 1.0, -1.0)[:, None, None, None]
    margin = np.abs(logits[:, 0])
    crossings = np.asarray([0.3, 0.55, 0.9, 0.123, 2.0, 5.0])  # where on the path the margin reaches zero
    step = (margin / np.sum(weights ** 2))[:, None, None, None] * weights
    edits = -sign * step / crossings[:, None, None, None]
    data = {"image": images, "label": labels, "counterfactual": (images + edits).astype(np.float32),
            "target": 1 - labels}
    geometry = local_geometry.per_image(readout, data, batch_size=4, mesh=parallel.make_mesh())
    inside = crossings <= 1
    np.testing.assert_allclose(geometry["edit_flip_fraction"][inside], crossings[inside], atol=1 / 4096)
    assert np.all(geometry["edit_flip_fraction"][inside] >= crossings[inside])  # the first point that flips
    assert np.all(np.isinf(geometry["edit_flip_fraction"][~inside]))
    edit_norms = np.linalg.norm(edits.reshape(len(images), -1), axis=-1)
    np.testing.assert_allclose(geometry["edit_flip_l2"][inside], crossings[inside] * edit_norms[inside], rtol=2e-3)
    # Straight down the gradient, the path's flip is the first-order L2 distance itself.
    np.testing.assert_allclose(geometry["edit_flip_over_l2_distance"][inside], 1.0, rtol=2e-3)
    sideways = {**data, "counterfactual": (images + edits + 3 * np.roll(edits, 1, axis=1)).astype(np.float32)}
    oblique = local_geometry.per_image(readout, sideways, batch_size=4, mesh=parallel.make_mesh())
    farther = np.isfinite(oblique["edit_flip_over_l2_distance"])
    assert farther.any() and np.all(oblique["edit_flip_over_l2_distance"][farther] > 1.0)


def test_two_linear_decisions_share_their_fragile_directions_by_the_cosine_of_their_weights(images):
    weights = np.random.default_rng(9).normal(size=SHAPE).astype(np.float32)
    labels = np.arange(len(images), dtype=np.int32) % 2
    data = {"image": images, "label": labels}
    reference = local_geometry.margin_gradients(linear_readout(weights), data, batch_size=4,
                                                mesh=parallel.make_mesh())
    sign = np.where(labels == 0, 1.0, -1.0)[:, None, None, None]
    np.testing.assert_allclose(reference, sign * weights, rtol=1e-5)  # grad(z_y - z_other)
    other = np.random.default_rng(10).normal(size=SHAPE).astype(np.float32)
    mixed = weights + other
    compared = local_geometry.per_image(
        linear_readout(mixed), {**data, "reference_gradient": reference}, batch_size=4, mesh=parallel.make_mesh())
    expected = mixed.ravel() @ weights.ravel() / np.linalg.norm(mixed) / np.linalg.norm(weights)
    np.testing.assert_allclose(compared["cosine_with_reference"], expected, rtol=1e-5)
    itself = local_geometry.per_image(linear_readout(weights), {**data, "reference_gradient": reference},
                                      batch_size=4, mesh=parallel.make_mesh())
    np.testing.assert_allclose(itself["cosine_with_reference"], 1.0, rtol=1e-5)


def test_on_a_path_that_changes_class_three_times_the_first_change_is_found():
    """A cubic margin along the path: wrong from t = 0.3 to 0.5, right again to 0.8, wrong after. The first
    change (0.3) is found, not a later crossing; an image already misread at t = 0 reads 0."""
    def apply_fn(params, x):
        u = jnp.mean(x.reshape(len(x), -1), -1) - 0.5  # 0.4 t along the edit below
        margin = -(u - 0.12) * (u - 0.2) * (u - 0.32)
        return jnp.stack([margin, jnp.zeros_like(margin)], -1)

    readout = Readout("cubic", apply_fn, {}, num_classes=2, has_detector=False)
    images = np.full((4,) + SHAPE, 0.5, np.float32)
    data = {"image": images, "label": np.asarray([0, 0, 0, 1], np.int32),
            "counterfactual": images + 0.4, "target": np.asarray([1, 1, 1, 0], np.int32)}
    geometry = local_geometry.per_image(readout, data, batch_size=4, mesh=parallel.make_mesh())
    np.testing.assert_allclose(geometry["edit_flip_fraction"][:3], 0.3, atol=1 / 4096)
    assert geometry["edit_flip_fraction"][3] == 0.0


def test_with_three_classes_the_fake_contrast_is_against_the_true_and_the_nearest_class():
    rng = np.random.default_rng(11)
    weights = rng.normal(size=(3, N)).astype(np.float32)
    fake = rng.normal(size=N).astype(np.float32)

    def apply_fn(params, x):
        flat = x.reshape(len(x), -1)
        return jnp.concatenate([flat @ params["w"].T, (flat @ params["v"])[:, None]], -1)

    readout = Readout("three", apply_fn, {"w": jnp.asarray(weights), "v": jnp.asarray(fake)}, num_classes=3,
                      has_detector=True)
    images = rng.uniform(0.3, 0.7, (8,) + SHAPE).astype(np.float32)
    logits = images.reshape(8, -1) @ weights.T
    labels = logits.argmax(-1).astype(np.int32)
    geometry = probe(readout, images, labels)
    expected = []
    for logit, label in zip(logits, labels):
        distances = [(logit[label] - logit[j]) / np.abs(weights[label] - weights[j]).sum() if j != label else np.inf
                     for j in range(3)]
        nearest = int(np.argmin(distances))
        g, contrast = weights[label] - weights[nearest], fake - (weights[label] + weights[nearest]) / 2
        expected.append(g @ contrast / np.linalg.norm(g) / np.linalg.norm(contrast))
    np.testing.assert_allclose(geometry["cosine_with_fake_contrast"], expected, atol=1e-5)


def test_counterfactuals_without_their_target_class_are_refused(images):
    with pytest.raises(ValueError, match="target"):
        local_geometry.per_image(linear_readout(np.ones(SHAPE, np.float32)),
                                 {"image": images, "label": np.zeros(6, np.int32), "counterfactual": images},
                                 batch_size=4, mesh=parallel.make_mesh())


def test_the_margin_is_the_attack_objectives_own(images):
    """The probe's margin is the one the attacks drive below zero (`attacks` succeed iff it is negative)."""
    weights = np.random.default_rng(4).normal(size=SHAPE).astype(np.float32)
    readout = linear_readout(weights)
    labels = np.arange(len(images), dtype=np.int32) % 2
    geometry = probe(readout, images, labels)
    logits = readout.apply_fn(readout.params, jnp.asarray(images))
    won = attacks.succeeded(logits, jnp.asarray(labels), num_classes=2, targeted=False, joint=False)
    np.testing.assert_array_equal(np.asarray(won), geometry["margin"] <= 0)


@pytest.mark.slow
def test_the_experiment_probes_every_attacked_decision_of_a_run_and_leaves_it_untouched(tmp_path, repo_root):
    """experiments/local_geometry.py as a user runs it, on a tiny GAN run reading its own counterfactuals and
    gradients: D is probed (G's head is not), the tables are written, and the run folder is exactly as it was."""
    runs = tmp_path / "runs"
    train.train_and_evaluate(cracks.get_config("tiny"), str(runs / "gan"))
    before = sorted((str(p.relative_to(runs)), p.stat().st_mtime_ns) for p in runs.rglob("*"))
    command = [sys.executable, str(repo_root / "experiments" / "local_geometry.py"), f"--runs={runs}",
               "--workdirs=gan", "--counterfactuals_from=gan", "--reference=gan", "--figure",
               f"--out={tmp_path / 'out'}"]
    subprocess.run(command, check=True, cwd=repo_root, capture_output=True, env={**os.environ, "PYTHONPATH": "."})
    results = json.loads((tmp_path / "out" / "local_geometry.json").read_text())
    d = results["gan"]["D"]
    assert set(results["gan"]) == {"D"}
    assert 0.0 <= d["accuracy"] <= 1.0 and set(d["first_order_accuracy"]) == {"2", "4", "8"}
    assert d["measured_accuracy"] == {"pgd": {}, "ensemble": {}}  # never attacked: nothing made up
    assert 0.0 <= d["counterfactual_flip_rate"] <= 1.0  # D reading its own G's edits
    assert abs(d["median_of_correct"]["cosine_with_reference"] - 1.0) < 1e-4  # D against itself
    assert "gan: D" in (tmp_path / "out" / "local_geometry.md").read_text()
    with Image.open(tmp_path / "out" / "local_geometry_gradients.png") as drawn:  # 8 rows: image | D's gradient
        size = cracks.get_config("tiny").data.image_size
        assert drawn.size == (2 * size + 2, 8 * size + 7 * 2)
    assert sorted((str(p.relative_to(runs)), p.stat().st_mtime_ns) for p in runs.rglob("*")) == before


def test_the_params_digest_tells_weights_apart_not_where_they_live():
    """The same weights replicated over the mesh or on the host share a digest; one changed number, or the
    same numbers under another name, do not."""
    from jax.sharding import NamedSharding, PartitionSpec

    from cfjax.saved_runs import params_digest
    weights = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(2, np.float32)}
    replicated = jax.device_put(weights, NamedSharding(parallel.make_mesh(), PartitionSpec()))
    assert params_digest(replicated) == params_digest(weights)
    changed = {**weights, "w": weights["w"].copy()}
    changed["w"][2, 3] += 1e-6
    assert params_digest(changed) != params_digest(weights)
    assert params_digest({"v": weights["w"], "b": weights["b"]}) != params_digest(weights)


def test_measured_accuracy_is_read_only_from_an_attack_on_the_same_weights(tmp_path):
    """An attack output (or committed record) of a run with this name is used only when it attacked these
    weights: a record of the same config, seed and step trained again elsewhere is not this run's."""
    workdir, records = tmp_path / "runs" / "fruits_s0", tmp_path / "records"
    analysis = {"params_digest": "abc", "data": {"num_images": 10}, "step": 3000, "models": {"D": {
        "sweeps": [{"group": "linf", "epsilon": 4 / 255, "accuracy": 0.5},
                   {"group": "ensemble", "epsilon": 4 / 255, "accuracy": 0.4}], "checks": []}}}
    (records / "fruits_s0").mkdir(parents=True)
    (records / "fruits_s0" / "attack.json").write_text(json.dumps({"analysis": analysis}))
    with experiment_script("local_geometry") as script:
        assert script.measured_accuracy(str(workdir), str(records), "D", "abc", 10) == {
            "pgd": {"4": 0.5}, "ensemble": {"4": 0.4}}
        assert script.measured_accuracy(str(workdir), str(records), "D", "another", 10) == {
            "pgd": {}, "ensemble": {}}  # same name, same step: other weights
        assert script.measured_accuracy(str(workdir), str(records), "D", "abc", 11) == {"pgd": {}, "ensemble": {}}
        (workdir / "attack").mkdir(parents=True)  # the run's own output comes first
        (workdir / "attack" / "robustness.json").write_text(json.dumps({**analysis, "params_digest": "own"}))
        assert script.measured_accuracy(str(workdir), str(records), "D", "own", 10)["pgd"] == {"4": 0.5}
        assert script.measured_accuracy(str(workdir), str(records), "D", "abc", 10)["pgd"] == {}
        (workdir / "attack_pgd").mkdir()  # an attack written with --out=WORKDIR/attack_pgd
        (workdir / "attack_pgd" / "robustness.json").write_text(json.dumps({**analysis, "params_digest": "pgd"}))
        assert script.measured_accuracy(str(workdir), str(records), "D", "pgd", 10, "attack_pgd")["pgd"] == {"4": 0.5}
