"""Building blocks shared by the generator and the classifier-discriminator.

Down- and up-sampling are written as space-to-depth / depth-to-space plus a plain convolution:
the same receptive field as strided or transposed convolutions, but lowered to ordinary
convolutions, whose gradients are much faster on XLA:CPU (docs/design.md, section 6). Every
convolution is `Conv`: flax's, with an input gradient that stays fast inside loops (`cfjax.models.conv`).
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cfjax.models.conv import conv

NORMS = ("group", "layer", "instance", "none")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
Conv = functools.partial(nn.Conv, conv_general_dilated=conv)  # the same parameters and names as nn.Conv


def pixel_unshuffle(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    """(B, H, W, C) -> (B, H/f, W/f, C*f*f): space-to-depth without losing a pixel."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // factor, factor, w // factor, factor, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // factor, w // factor, c * factor * factor)


def pixel_shuffle(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    """Inverse of `pixel_unshuffle`: (B, H, W, C*f*f) -> (B, H*f, W*f, C)."""
    b, h, w, c = x.shape
    out_c = c // (factor * factor)
    x = x.reshape(b, h, w, factor, factor, out_c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * factor, w * factor, out_c)


class GroupNorm(nn.Module):
    """Group normalisation over (H, W, channels of a group) with a learned per-channel scale and bias:
    the function, parameter names and initialisation of `flax.linen.GroupNorm` (fast variance), so
    checkpoints move freely between the two.

    The statistics are reduced in two stages, per channel over the image and then over each group's few
    channels, instead of in one strided reduction over (H, W, group): 1.2-2.2x faster forward and
    backward on XLA:CPU (experiments/benchmarks/profile_step.py found normalisation ~30 % of the GAN
    step). They are reduced in float32 whatever `dtype` the output has.
    """

    num_groups: int
    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        channels = x.shape[-1]
        if channels % self.num_groups:
            raise ValueError(f"{self.num_groups} groups do not divide {channels} channels")
        group_size = channels // self.num_groups
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        x32 = x.astype(jnp.float32)
        image_axes = tuple(range(1, x.ndim - 1))
        count = group_size * math.prod(x.shape[1:-1])

        def group_mean(values):  # (B, ..., C) -> (B, groups)
            per_channel = values.sum(image_axes)
            return per_channel.reshape(x.shape[0], self.num_groups, group_size).sum(-1) / count

        mean = group_mean(x32)
        variance = jnp.maximum(group_mean(x32 * x32) - mean * mean, 0.0)
        per_channel = lambda g: jnp.repeat(g, group_size, axis=-1)
        multiplier = per_channel(jax.lax.rsqrt(variance + self.epsilon)) * scale
        shift = bias - per_channel(mean) * multiplier
        broadcastable = (x.shape[0],) + (1,) * (x.ndim - 2) + (channels,)
        return (x32 * multiplier.reshape(broadcastable) + shift.reshape(broadcastable)).astype(self.dtype)


def make_norm(kind: str, num_groups: int = 8, dtype: Any = jnp.float32) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """A normalisation layer without running statistics, so train and eval mode agree. Its statistics
    are reduced in float32 whatever `dtype` the output has."""
    if kind == "group":
        return lambda x: GroupNorm(num_groups=_groups(x.shape[-1], num_groups), dtype=dtype)(x)
    if kind == "instance":
        return lambda x: GroupNorm(num_groups=x.shape[-1], dtype=dtype)(x)
    if kind == "layer":
        return lambda x: nn.LayerNorm(dtype=dtype)(x)
    if kind == "none":
        return lambda x: x
    raise ValueError(f"normalisation must be one of {NORMS}, got {kind!r}")


def _groups(channels: int, wanted: int) -> int:
    """The largest group count <= wanted that divides the channel count."""
    for groups in range(min(wanted, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class ResBlock(nn.Module):
    """Pre-activation residual block: norm -> swish -> conv, twice, plus a 1x1 shortcut."""

    features: int
    norm: str = "group"
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        h = Conv(self.features, (3, 3), dtype=self.dtype)(nn.swish(make_norm(self.norm, dtype=self.dtype)(x)))
        h = Conv(self.features, (3, 3), dtype=self.dtype)(nn.swish(make_norm(self.norm, dtype=self.dtype)(h)))
        if x.shape[-1] != self.features:
            x = Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype)(x)
        return x + h


class ResBlocks:
    """Makes a module's residual blocks, named ResBlock_0, ResBlock_1, ... in call order as Flax would
    name them, with or without rematerialisation (recomputed in the backward pass to save memory at
    large resolutions): the parameter tree, and so checkpoints, are the same either way."""

    def __init__(self, norm: str, dtype: Any, remat: bool):
        self.norm, self.dtype, self.count = norm, dtype, 0
        self.block = nn.remat(ResBlock) if remat else ResBlock

    def __call__(self, features: int) -> nn.Module:
        self.count += 1
        return self.block(features, self.norm, self.dtype, name=f"ResBlock_{self.count - 1}")


class Downsample(nn.Module):
    """Halve the resolution: space-to-depth, then a 3x3 convolution."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return Conv(self.features, (3, 3), dtype=self.dtype)(pixel_unshuffle(x, 2))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour resize, then a 3x3 convolution."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return Conv(self.features, (3, 3), dtype=self.dtype)(x)


def to_signed(images: jnp.ndarray) -> jnp.ndarray:
    """Public images live in [0, 1]; networks see [-1, 1]."""
    return images * 2.0 - 1.0
