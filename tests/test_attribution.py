"""Attribution baselines against models whose answer is known, and the multi-class masks against a
generator and discriminator simple enough to reason about."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cfjax import visualize
from cfjax.kinds.gan import counterfactuals_toward_each_class
from cfjax.masks import attribution
from cfjax.models import ResNetClassifier

W = np.random.default_rng(0).normal(size=(4, 4, 3, 2)).astype(np.float32)  # a linear 2-class model


def _linear_logits(images):
    return jnp.einsum("bhwc,hwck->bk", images, jnp.asarray(W))


def test_input_gradients_of_a_linear_model_are_its_weights():
    images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 4, 4, 3)), jnp.float32)
    classes = jnp.array([1, 0])
    maps = np.asarray(attribution.input_gradients(_linear_logits, images, classes))
    np.testing.assert_allclose(maps[0], np.abs(W[..., 1]).max(-1), rtol=1e-6)
    np.testing.assert_allclose(maps[1], np.abs(W[..., 0]).max(-1), rtol=1e-6)


def test_integrated_gradients_of_a_linear_model_are_exact_and_complete():
    images = jnp.asarray(np.random.default_rng(2).uniform(size=(1, 4, 4, 3)), jnp.float32)
    maps = np.asarray(attribution.integrated_gradients(_linear_logits, images, jnp.array([1]), num_steps=3))
    expected = np.abs((np.asarray(images)[0] * W[..., 1]).sum(-1))  # x * w from a black baseline
    np.testing.assert_allclose(maps[0], expected, rtol=1e-5)


def test_grad_cam_is_a_non_negative_map_at_image_size_that_follows_the_class():
    model = ResNetClassifier(num_outputs=3, widths=(8, 16))
    images = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 16, 16, 3)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), images)["params"]
    cam = np.asarray(attribution.grad_cam(model, params, images, jnp.array([0, 0])))
    assert cam.shape == (2, 16, 16) and (cam >= 0).all()
    other = np.asarray(attribution.grad_cam(model, params, images, jnp.array([1, 1])))
    assert not np.allclose(cam, other)  # a different class logit gives a different map


def test_grad_cam_uses_the_gradient_at_the_last_feature_map():
    """The perturbation trick gives dz/dA: check it against the gradient through a manual split."""
    model = ResNetClassifier(num_outputs=2, widths=(8,), stem="conv")
    images = jnp.asarray(np.random.default_rng(4).uniform(size=(1, 8, 8, 3)), jnp.float32)
    params = model.init(jax.random.PRNGKey(1), images)["params"]
    _, state = model.apply({"params": params}, images, mutable=["intermediates"])
    features = state["intermediates"]["features"][0]

    def logit_from_shift(shift):
        return model.apply({"params": params, "perturbations": {"features": shift}}, images)[0, 1]

    grads = jax.grad(logit_from_shift)(jnp.zeros_like(features))
    expected = jax.image.resize(jax.nn.relu((grads.mean(axis=(1, 2), keepdims=True) * features).sum(-1)),
                                (1, 8, 8), "bilinear")
    np.testing.assert_allclose(np.asarray(attribution.grad_cam(model, params, images, jnp.array([1]))),
                               np.asarray(expected), rtol=1e-5, atol=1e-7)


def test_normalise_scales_each_map_to_a_peak_of_one():
    maps = jnp.array([[[0.0, 2.0]], [[0.0, 0.0]]])
    np.testing.assert_allclose(np.asarray(attribution.normalise(maps)), [[[0.0, 1.0]], [[0.0, 0.0]]])


class _ShiftGenerator:
    """G(x, t) = x + 0.1 * (t + 1) in pixel (0, 0): the edit toward t is known."""

    def apply(self, variables, images, targets, train=False):
        edit = jnp.zeros_like(images).at[:, 0, 0, :].set(0.1 * (targets[:, None] + 1.0))
        return images + edit, None


class _FixedDiscriminator:
    """Gives every counterfactual the same class probabilities (K = 3 real classes + fake)."""

    def __init__(self, logits):
        self.logits = jnp.asarray(logits, jnp.float32)

    def apply(self, variables, images, train=False):
        return jnp.broadcast_to(self.logits, (images.shape[0], 4))


_MEAN_MAP = ml_collections.ConfigDict({"reduce": "mean", "blur_radius": 0, "views": "identity"})  # |x - x_hat|


def test_masks_toward_each_class_and_the_nearest_target():
    images = jnp.zeros((2, 3, 3, 3))
    labels = jnp.array([2, 0])
    d = _FixedDiscriminator([0.0, 1.0, 2.0, 0.0])  # class 2 looks most reachable, then class 1
    out = counterfactuals_toward_each_class(_ShiftGenerator(), d, None, None, images, labels, 3, _MEAN_MAP)
    assert out["maps"].shape == (2, 3, 3, 3)
    np.testing.assert_allclose(np.asarray(out["maps"][0, :, 0, 0]), [0.1, 0.2, 0.3], rtol=1e-6)
    # The own class is never the nearest: image 0 (class 2) goes to 1, image 1 (class 0) to 2.
    np.testing.assert_array_equal(np.asarray(out["nearest"]), [1, 2])
    probabilities = np.asarray(jax.nn.softmax(jnp.array([0.0, 1.0, 2.0])))
    np.testing.assert_allclose(np.asarray(out["target_probability"][0]), probabilities, rtol=1e-6)


def test_equally_reachable_targets_go_to_the_smaller_edit():
    d = _FixedDiscriminator([0.0, 0.0, 0.0, 0.0])
    out = counterfactuals_toward_each_class(_ShiftGenerator(), d, None, None, jnp.zeros((1, 2, 2, 3)),
                                            jnp.array([0]), 3, _MEAN_MAP)
    assert int(out["nearest"][0]) == 1  # targets 1 and 2 tie on D; 1 needs the smaller edit
    assert visualize.outline(np.zeros((4, 4, 3)))[0, 0, 1] == pytest.approx(1.0)
