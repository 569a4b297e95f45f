"""Shapes, dtypes and the structural promises of G and D."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfjax.models import (
    ResNetClassifier,
    make_discriminator,
    make_generator,
    make_plain_classifier,
    p_fake,
    predict_class,
)
from cfjax.models.generator import Generator
from cfjax.models.layers import GroupNorm, pixel_shuffle, pixel_unshuffle


def _images(batch=3, size=32, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (batch, size, size, 3))


@pytest.mark.parametrize(
    "num_classes, depth, output", [(2, 1, "residual"), (3, 2, "image"), (5, 3, "residual"), (4, 3, "image")]
)
def test_generator_shapes(num_classes, depth, output):
    g = Generator(num_classes, width=8, depth=depth, output=output)
    x, t = _images(), jnp.array([0, 1, num_classes - 1])
    params = g.init(jax.random.PRNGKey(1), x, t)
    x_hat, logits = g.apply(params, x, t)
    chex.assert_shape(x_hat, x.shape)
    chex.assert_shape(logits, (3, num_classes))
    chex.assert_type([x_hat, logits], jnp.float32)
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0


@pytest.mark.parametrize("stem, norm", [("unshuffle", "instance"), ("conv", "layer"), ("conv", "none")])
def test_generator_stems_and_norms(stem, norm):
    g = Generator(2, width=8, depth=2, stem=stem, norm=norm)
    x, t = _images(size=16), jnp.array([0, 1, 1])
    x_hat, logits = g.apply(g.init(jax.random.PRNGKey(0), x, t), x, t)
    chex.assert_shape([x_hat, logits], [x.shape, (3, 2)])


def test_residual_generator_starts_as_identity():
    g = Generator(2, width=8, depth=2, output="residual")
    x, t = _images(), jnp.array([1, 0, 1])
    x_hat, _ = g.apply(g.init(jax.random.PRNGKey(0), x, t), x, t)
    np.testing.assert_array_equal(np.asarray(x_hat), np.asarray(x))


def test_generator_head_does_not_see_the_target():
    """The label leak of docs/design.md, section 6: the head must read x alone."""
    g = Generator(3, width=8, depth=2, output="image")
    x = _images()
    params = g.init(jax.random.PRNGKey(0), x, jnp.zeros(3, jnp.int32))
    x_a, logits_a = g.apply(params, x, jnp.array([0, 0, 0]))
    x_b, logits_b = g.apply(params, x, jnp.array([1, 2, 1]))
    np.testing.assert_array_equal(np.asarray(logits_a), np.asarray(logits_b))
    assert not np.allclose(np.asarray(x_a), np.asarray(x_b)), "the target must change the image"


def test_generator_dropout_only_in_training():
    g = Generator(2, width=8, depth=1, head_dropout=0.5)
    x, t = _images(), jnp.array([0, 1, 0])
    params = g.init(jax.random.PRNGKey(0), x, t)
    _, eval_a = g.apply(params, x, t, train=False)
    _, eval_b = g.apply(params, x, t, train=False)
    _, train_logits = g.apply(params, x, t, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    assert not np.allclose(np.asarray(eval_a), np.asarray(train_logits))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_discriminator_and_plain_classifier_outputs(tiny_config, num_classes):
    tiny_config.num_classes = num_classes
    x = _images(size=tiny_config.data.image_size)
    d, plain = make_discriminator(tiny_config), make_plain_classifier(tiny_config)
    d_logits = d.apply(d.init(jax.random.PRNGKey(0), x), x)
    c_logits = plain.apply(plain.init(jax.random.PRNGKey(0), x), x)
    chex.assert_shape([d_logits, c_logits], [(3, num_classes + 1), (3, num_classes)])
    probs = p_fake(d_logits)
    chex.assert_shape(probs, (3,))
    assert np.all((np.asarray(probs) > 0) & (np.asarray(probs) < 1))
    assert np.all(np.asarray(predict_class(d_logits, num_classes)) < num_classes)


def test_predict_class_ignores_the_fake_logit():
    logits = jnp.array([[0.0, 1.0, 100.0], [2.0, 1.0, 50.0]])
    np.testing.assert_array_equal(np.asarray(predict_class(logits, 2)), [1, 0])


def test_make_generator_reads_config(tiny_config):
    g = make_generator(tiny_config)
    assert (g.num_classes, g.width, g.depth) == (2, tiny_config.generator.width, tiny_config.generator.depth)


def test_pixel_shuffle_inverts_unshuffle():
    x = _images(batch=2, size=8)
    y = pixel_unshuffle(x, 2)
    chex.assert_shape(y, (2, 4, 4, 12))
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(y, 2)), np.asarray(x))
    # Each output pixel group holds exactly the 2x2 block it came from.
    np.testing.assert_array_equal(np.asarray(y[0, 0, 0, :3]), np.asarray(x[0, 0, 0]))
    np.testing.assert_array_equal(np.asarray(y[0, 0, 0, 3:6]), np.asarray(x[0, 0, 1]))


@pytest.mark.parametrize("shape,groups", [((3, 8, 8, 16), 8), ((2, 5, 7, 12), 12), ((2, 6, 6, 6), 3)])
def test_group_norm_is_flax_group_norm_computed_faster(shape, groups):
    """The two-stage reduction computes flax.linen.GroupNorm's function, with its parameter names, shapes
    and initial values (so saved runs load either way), to float32 rounding, gradients included."""
    import flax.linen as nn

    x = jax.random.normal(jax.random.PRNGKey(0), shape) * 3 + 2
    reference, ours = nn.GroupNorm(num_groups=groups), GroupNorm(num_groups=groups)
    params = reference.init(jax.random.PRNGKey(1), x)
    chex.assert_trees_all_equal(params, ours.init(jax.random.PRNGKey(1), x))
    params = jax.tree.map(lambda a: a + jax.random.normal(jax.random.PRNGKey(2), a.shape), params)
    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), atol=1e-5)
    loss = lambda module: lambda p, v: (module.apply(p, v) ** 3).sum()
    chex.assert_trees_all_close(jax.grad(loss(ours), (0, 1))(params, x), jax.grad(loss(reference), (0, 1))(params, x),
                                rtol=1e-4, atol=1e-3)
    x16 = x.astype(jnp.bfloat16)
    half = GroupNorm(num_groups=groups, dtype=jnp.bfloat16).apply(params, x16)
    reference_half = nn.GroupNorm(num_groups=groups, dtype=jnp.bfloat16).apply(params, x16)
    assert half.dtype == reference_half.dtype == jnp.bfloat16
    np.testing.assert_allclose(half.astype(jnp.float32), reference_half.astype(jnp.float32), rtol=0.02, atol=0.05)


def test_resnet_classifier_widths():
    net = ResNetClassifier(3, widths=(8, 16, 32))
    x = _images(size=32)
    chex.assert_shape(net.apply(net.init(jax.random.PRNGKey(0), x), x), (3, 3))


def _loss_and_grads(make, config, images, labels):
    net = make(config)
    args = (images, labels) if net.__class__ is Generator else (images,)
    params = jax.jit(net.init)(jax.random.PRNGKey(0), *args)["params"]

    def loss(p):
        out = net.apply({"params": p}, *args)
        return sum(jnp.sum(jnp.square(o)) for o in jax.tree.leaves(out))

    return params, *jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("make", [make_generator, make_discriminator])
def test_remat_keeps_parameters_outputs_and_gradients(tiny_config, make):
    images, labels = _images(batch=2), jnp.array([0, 1])
    params, loss, grads = _loss_and_grads(make, tiny_config, images, labels)
    tiny_config.remat = True
    remat_params, remat_loss, remat_grads = _loss_and_grads(make, tiny_config, images, labels)
    # Same parameter names (checkpoints load either way), same function, same gradients.
    chex.assert_trees_all_equal_structs(params, remat_params)
    chex.assert_trees_all_equal(params, remat_params)
    np.testing.assert_allclose(float(remat_loss), float(loss), rtol=1e-6)
    chex.assert_trees_all_close(remat_grads, grads, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [make_generator, make_discriminator])
def test_bfloat16_compute_keeps_float32_parameters_and_outputs(tiny_config, make):
    images, labels = _images(batch=2), jnp.array([0, 1])
    params, loss, grads = _loss_and_grads(make, tiny_config, images, labels)
    tiny_config.compute_dtype = "bfloat16"
    bf16_params, bf16_loss, bf16_grads = _loss_and_grads(make, tiny_config, images, labels)
    assert {a.dtype for a in jax.tree.leaves((bf16_params, bf16_grads))} == {jnp.dtype(jnp.float32)}
    net = make(tiny_config)
    args = (images, labels) if isinstance(net, Generator) else (images,)
    outputs = jax.eval_shape(lambda p: net.apply({"params": p}, *args), bf16_params)
    assert {o.dtype for o in jax.tree.leaves(outputs)} == {jnp.dtype(jnp.float32)}
    # The same function up to bf16 rounding (8 mantissa bits), not a different one. (G's residual head starts
    # at zero, so its gradients reach only the head, where rounding weighs most: compare D's gradients.)
    np.testing.assert_allclose(float(bf16_loss), float(loss), rtol=0.05)
    if make is make_discriminator:
        assert float(optax_cosine(bf16_grads, grads)) > 0.99


def optax_cosine(a, b):
    dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    norm = lambda t: jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(t)))
    return dot / (norm(a) * norm(b))


@pytest.mark.parametrize("remat", [False, True])
def test_parameter_names_are_those_saved_runs_hold(tiny_config, remat):
    """Checkpoints written before residual blocks were named explicitly (Flax's automatic names, in call
    order) must still load: the same names, each block at the same place in the network."""
    tiny_config.remat = remat
    images, labels = jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), jnp.int32)
    g = jax.eval_shape(make_generator(tiny_config).init, jax.random.PRNGKey(0), images, labels)["params"]
    d = jax.eval_shape(make_discriminator(tiny_config).init, jax.random.PRNGKey(0), images)["params"]
    assert sorted(g) == ["Conv_0", "Conv_1", "Downsample_0", "Downsample_1", "GroupNorm_0", *(f"ResBlock_{i}" for i in
                         range(6)), "Upsample_0", "Upsample_1", "Upsample_2", "class_head", "image_head"]
    assert sorted(d) == ["Conv_0", "Dense_0", "Downsample_0", "GroupNorm_0", "ResBlock_0", "ResBlock_1"]
    # Encoder (8, 16), bottleneck 32, after the target planes 32, decoder (16, 8): width 8, depth 2.
    assert [g[f"ResBlock_{i}"]["Conv_0"]["kernel"].shape[-1] for i in range(6)] == [8, 16, 32, 32, 16, 8]
    assert [d[f"ResBlock_{i}"]["Conv_0"]["kernel"].shape[-1] for i in range(2)] == [8, 16]
