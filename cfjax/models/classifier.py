"""ResNet-style CNN classifiers: the classifier-discriminator D (K+1 logits) and the plain baseline (K)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from cfjax.models.layers import COMPUTE_DTYPES, Conv, Downsample, ResBlocks, make_norm, pixel_unshuffle, to_signed


class ResNetClassifier(nn.Module):
    """Normalised residual stages with mean+max pooling.

    Normalisation and mean+max pooling matter: a plain strided CNN stayed at chance on cracks while
    this learned (docs/design.md, section 6). The discriminator is this network with K+1 outputs.
    """

    num_outputs: int
    widths: tuple  # no default for the size: config.discriminator sets it
    blocks_per_stage: int = 1
    norm: str = "group"
    stem: str = "unshuffle"
    dropout: float = 0.0
    compute_dtype: str = "float32"  # "bfloat16" on a GPU or TPU; parameters and logits stay float32
    remat: bool = False  # recompute residual blocks in the backward pass

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        dtype = COMPUTE_DTYPES[self.compute_dtype]
        res_block = ResBlocks(self.norm, dtype, self.remat)
        h = to_signed(images).astype(dtype)
        if self.stem == "unshuffle":
            h = pixel_unshuffle(h, 2)
        h = Conv(self.widths[0], (3, 3), dtype=dtype)(h)
        for stage, features in enumerate(self.widths):
            if stage > 0:
                h = Downsample(features, dtype)(h)
            for _ in range(self.blocks_per_stage):
                h = res_block(features)(h)
        # The last feature map, exposed for Grad-CAM: `sow` keeps its value and `perturb` its gradient
        # (both are no-ops unless the caller asks for those collections).
        self.sow("intermediates", "features", h)
        h = self.perturb("features", h)
        h = nn.swish(make_norm(self.norm, dtype=dtype)(h))
        pooled = jnp.concatenate([h.mean(axis=(1, 2)), h.max(axis=(1, 2))], axis=-1)
        pooled = nn.Dropout(self.dropout, deterministic=not train)(pooled)
        return nn.Dense(self.num_outputs, dtype=dtype)(pooled).astype(jnp.float32)


def class_logits(d_logits: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """D's "hybrid" class readout: the first K logits (the fake logit is ignored)."""
    return d_logits[..., :num_classes]


def predict_class(d_logits: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """Class predicted by D: argmax over the K real classes."""
    return jnp.argmax(class_logits(d_logits, num_classes), axis=-1)


def p_fake(d_logits: jnp.ndarray) -> jnp.ndarray:
    """D's "fakeness": softmax probability of the last (fake) output, an uncertainty score."""
    return jax.nn.softmax(d_logits, axis=-1)[..., -1]
