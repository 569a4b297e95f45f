"""`cfjax.models.conv`: lax's values and gradients, and an input gradient XLA keeps canonical inside loops."""

import json
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cfjax.models import classifier, layers
from cfjax.models.conv import conv
from cfjax.models.layers import Conv

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("kernel, padding", [((3, 3), "SAME"), ((1, 1), "SAME"), ((3, 2), "VALID"),
                                             ((3, 3), ((2, 0), (1, 1)))])
def test_values_and_both_gradients_are_lax_conv_s(kernel, padding):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 7, 3))
    k = jax.random.normal(jax.random.PRNGKey(1), (*kernel, 3, 5))
    numbers = lax.conv_dimension_numbers(x.shape, k.shape, NHWC)
    ours = lambda x, k: conv(x, k, (1, 1), padding, dimension_numbers=numbers)  # noqa: E731
    theirs = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=NHWC)  # noqa: E731
    np.testing.assert_array_equal(ours(x, k), theirs(x, k))  # the same convolutions: the same bits
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))(x, k) for f in (ours, theirs)]
    chex.assert_trees_all_equal(*grads)


def test_what_it_does_not_cover_is_lax_conv_unchanged():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 4))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 4))
    for options in (dict(window_strides=(2, 2)), dict(feature_group_count=2), dict(rhs_dilation=(2, 2))):
        options = {"window_strides": (1, 1), "feature_group_count": 1, **options}
        kernel = k if options["feature_group_count"] == 2 else jnp.concatenate([k, k], axis=2)
        np.testing.assert_array_equal(conv(x, kernel, padding="SAME", dimension_numbers=NHWC, **options),
                                      lax.conv_general_dilated(x, kernel, padding="SAME", dimension_numbers=NHWC,
                                                               **options))


def _input_gradient_convs(net, params, images, unroll):
    gradient = jax.grad(lambda x: net.apply(params, x).sum())
    looped = jax.jit(lambda x: lax.fori_loop(0, 2, lambda i, x: x + 1e-3 * gradient(x), x, unroll=unroll))
    hlo = looped.lower(images).compile().as_text()
    return [line for line in hlo.splitlines() if " convolution(" in line]


def test_the_input_gradient_inside_a_loop_is_a_canonical_convolution():
    """The layout XLA:CPU runs fast (`01io` kernels). flax's plain Conv gives `01oi` inside the loop (the slow
    path this module exists for); the check that it still does keeps this test able to fail."""
    images = jnp.ones((2, 16, 16, 3))
    for layer, expect_canonical in ((Conv, True), (nn.Conv, False)):
        net = nn.Sequential([layer(4, (3, 3)), nn.relu, layer(2, (3, 3))])
        params = net.init(jax.random.PRNGKey(0), images)
        convs = _input_gradient_convs(net, params, images, unroll=1)
        assert convs and all("->b01f" in line for line in convs)
        assert all("_01io->" in line for line in convs) == expect_canonical, (layer, convs)


def test_the_models_keep_their_parameter_names(monkeypatch):
    """Checkpoints written with flax's plain Conv restore into today's models: the same names and shapes."""
    model = classifier.ResNetClassifier(num_outputs=3, widths=(8, 16))
    images = jnp.ones((1, 16, 16, 3))
    ours = jax.tree_util.tree_map(jnp.shape, model.init(jax.random.PRNGKey(0), images))
    monkeypatch.setattr(classifier, "Conv", nn.Conv)
    monkeypatch.setattr(layers, "Conv", nn.Conv)
    plain = jax.tree_util.tree_map(jnp.shape, model.init(jax.random.PRNGKey(0), images))
    assert ours == plain and "Conv_0" in ours["params"]


@pytest.mark.perf
@pytest.mark.slow
@pytest.mark.subprocess
def test_the_loop_gradient_benchmark_times_each_workload_both_ways(repo_root, tmp_path):
    """experiments/benchmarks/loop_gradients.py runs at a tiny size (its figures come from running it on idle
    cores, not from a test)."""
    command = [sys.executable, str(repo_root / "experiments" / "benchmarks" / "loop_gradients.py"), "--variant=tiny",
               "--batch=4", "--repeats=1", f"--out={tmp_path}"]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "loop_gradients.json").read_text())["rows"]
    assert len(rows) == 5 and all(r[v]["median_s"] > 0 for r in rows.values() for v in ("flax nn.Conv", "cfjax Conv"))
    assert "| APGD-CE, 100 iterations |" in (tmp_path / "loop_gradients.md").read_text()
