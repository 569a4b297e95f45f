"""The counterfactual generator G(x, t) -> (x_hat, class_logits): a conditional U-Net."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from cfjax.models.layers import (
    COMPUTE_DTYPES,
    Conv,
    Downsample,
    ResBlocks,
    Upsample,
    make_norm,
    pixel_unshuffle,
    to_signed,
)

OUTPUT_MODES = ("residual", "image", "logits")
STEMS = ("unshuffle", "conv")


def _target_planes(target: jnp.ndarray, num_classes: int, like: jnp.ndarray) -> jnp.ndarray:
    """One-hot target class broadcast to constant planes the size of `like`."""
    one_hot = jax.nn.one_hot(target, num_classes, dtype=like.dtype)
    return jnp.broadcast_to(one_hot[:, None, None, :], like.shape[:3] + (num_classes,))


class Generator(nn.Module):
    """U-Net that turns an image of class y into a counterfactual of class `target`.

    The classification head reads the bottleneck of the *encoder*, which sees x alone: the target
    class is fed to the decoder only. Feeding it to the encoder lets the head read y off the target
    planes when t = 1 - y (docs/design.md, section 6). In "residual" mode x_hat = clip(x + tanh(delta))
    with delta's last layer initialised at zero, so G starts as the identity and learns a sparse edit.
    In "logits" mode the raw head output is returned instead of an image (`out_channels` maps, e.g. one
    segmentation logit): the same U-Net serves as the supervised segmentation baseline.
    """

    num_classes: int
    width: int  # no defaults for the size: config.generator sets it
    depth: int
    norm: str = "group"
    output: str = "residual"
    stem: str = "unshuffle"
    head_dropout: float = 0.1
    out_channels: int = 0  # 0: as many as the input image has
    compute_dtype: str = "float32"  # "bfloat16" on a GPU or TPU; parameters and outputs stay float32
    remat: bool = False  # recompute residual blocks in the backward pass (memory at large resolutions)

    @nn.compact
    def __call__(self, images: jnp.ndarray, target: jnp.ndarray, *, train: bool = False):
        if self.output not in OUTPUT_MODES:
            raise ValueError(f"generator.output must be one of {OUTPUT_MODES}, got {self.output!r}")
        if self.stem not in STEMS:
            raise ValueError(f"generator.stem must be one of {STEMS}, got {self.stem!r}")
        dtype = COMPUTE_DTYPES[self.compute_dtype]
        res_block = ResBlocks(self.norm, dtype, self.remat)
        signed = to_signed(images).astype(dtype)
        h = pixel_unshuffle(signed, 2) if self.stem == "unshuffle" else signed
        h = Conv(self.width, (3, 3), dtype=dtype)(h)

        skips = []
        for level in range(self.depth):
            features = self.width * 2**level
            h = res_block(features)(h)
            skips.append(h)
            h = Downsample(features * 2, dtype)(h)
        h = res_block(self.width * 2**self.depth)(h)

        pooled = jnp.concatenate([h.mean(axis=(1, 2)), h.max(axis=(1, 2))], axis=-1)
        pooled = nn.Dropout(self.head_dropout, deterministic=not train)(pooled)
        class_logits = nn.Dense(self.num_classes, dtype=dtype, name="class_head")(pooled).astype(jnp.float32)

        h = jnp.concatenate([h, _target_planes(target, self.num_classes, h)], axis=-1)
        h = res_block(self.width * 2**self.depth)(h)
        for level in reversed(range(self.depth)):
            features = self.width * 2**level
            h = Upsample(features, dtype)(h)
            h = jnp.concatenate([h, skips[level], _target_planes(target, self.num_classes, h)], axis=-1)
            h = res_block(features)(h)

        h = nn.swish(make_norm(self.norm, dtype=dtype)(h))
        if self.stem == "unshuffle":
            # Back to full resolution, beside the input itself: edits can follow single pixels.
            h = Upsample(max(self.width // 2, 4), dtype)(h)
            h = jnp.concatenate([h, signed], axis=-1)
            h = nn.swish(Conv(max(self.width // 2, 4), (3, 3), dtype=dtype)(h))
        head_init = nn.initializers.zeros if self.output == "residual" else nn.initializers.lecun_normal()
        out = Conv(self.out_channels or images.shape[-1], (3, 3), kernel_init=head_init, dtype=dtype,
                      name="image_head")(h).astype(jnp.float32)
        if self.output == "logits":
            return out, class_logits
        if self.output == "residual":
            counterfactual = jnp.clip(images + jnp.tanh(out), 0.0, 1.0)
        else:
            counterfactual = (jnp.tanh(out) + 1.0) / 2.0
        return counterfactual, class_logits
