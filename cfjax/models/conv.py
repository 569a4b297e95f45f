"""A convolution whose input gradient runs at full speed inside `lax.fori_loop` on XLA:CPU.

Every attack (PGD, APGD, FAB) and PGD training take the gradient of a network with respect to its input
inside a loop. JAX writes that gradient as a convolution with the kernel's in/out axes swapped
(`dim_labels=b01f_01oi->b01f`). Outside a loop XLA:CPU copies the kernel into its canonical layout
first; inside a loop body it cannot (the kernel is a loop-carried value of fixed layout), and the
convolution falls to a generic path: APGD-CE and FAB-T of the ensemble ran 6.9x and 4.2x slower on the
fruit classifier (jax-ml/jax#12868; docs/performance.md, "Gradients inside loops").

`conv` computes the same input gradient with the kernel flipped and its axes swapped *explicitly*
(a small array op inside the loop), so the convolution XLA sees is canonical (`01io`) everywhere.
The values are those of JAX's own rule; the weight gradient is JAX's own. It covers what cfjax's
models use (NHWC, HWIO, stride 1, no dilation, no groups) and hands anything else to
`lax.conv_general_dilated` unchanged. Pass it as `nn.Conv(..., conv_general_dilated=conv)`.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Sequence[int], padding, *, lhs_dilation=None,
         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1, precision=None,
         preferred_element_type=None) -> jnp.ndarray:
    """`lax.conv_general_dilated`'s signature (as `flax.linen.Conv` calls it) and values."""
    spatial = lhs.ndim - 2
    plain = (lhs.ndim == 4 and all(s == 1 for s in window_strides) and feature_group_count == 1
             and preferred_element_type is None and all(d == 1 for d in (lhs_dilation or (1,) * spatial))
             and all(d == 1 for d in (rhs_dilation or (1,) * spatial))
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    if not plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision,
                                        preferred_element_type=preferred_element_type)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    return _stride_one(tuple(tuple(int(p) for p in pair) for pair in padding), precision, lhs, rhs)


def _plain_conv(padding, precision, lhs, rhs):
    return lax.conv_general_dilated(lhs, rhs, (1, 1), padding, dimension_numbers=_NHWC, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _stride_one(padding, precision, lhs, rhs):
    return _plain_conv(padding, precision, lhs, rhs)


def _forward(padding, precision, lhs, rhs):
    return _plain_conv(padding, precision, lhs, rhs), (lhs, rhs)


def _backward(padding, precision, residuals, cotangent):
    lhs, rhs = residuals
    # The input gradient: the cotangent convolved with the kernel turned by 180 degrees, in and out swapped,
    # padded so the output regains the input's size (k - 1 - pad on each side, for stride 1).
    turned = jnp.swapaxes(jnp.flip(rhs, (0, 1)), 2, 3)
    back_padding = tuple((k - 1 - low, k - 1 - high) for k, (low, high) in zip(rhs.shape[:2], padding))
    lhs_gradient = _plain_conv(back_padding, precision, cotangent.astype(rhs.dtype), turned)
    _, rhs_vjp = jax.vjp(functools.partial(_plain_conv, padding, precision, lhs), rhs)
    (rhs_gradient,) = rhs_vjp(cotangent)
    return lhs_gradient.astype(lhs.dtype), rhs_gradient


_stride_one.defvjp(_forward, _backward)
