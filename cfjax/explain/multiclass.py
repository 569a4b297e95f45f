"""Counterfactual masks for K > 2 classes (beyond the paper, which is binary): one mask toward each
target class, and the "nearest" target, the class D finds easiest to reach from the image."""

import jax
import jax.numpy as jnp
import numpy as np

from cfjax.explain import saliency
from cfjax.models import class_logits


def masks_toward_each_class(generator, discriminator, g_params, d_params, images: jnp.ndarray, labels: jnp.ndarray,
                            num_classes: int, reduce: str = "mean") -> dict:
    """For every target t: x_hat_t = G(x, t), its saliency |x - x_hat_t| and D's probability of t
    on x_hat_t (over the K real classes). The nearest target is the other class with the highest
    such probability (ties: the smaller edit). Shapes: maps (B, K, H, W), probabilities (B, K)."""
    counterfactuals, maps, reached = [], [], []
    for target in range(num_classes):
        x_hat, _ = generator.apply({"params": g_params}, images, jnp.full(images.shape[:1], target, jnp.int32))
        probabilities = jax.nn.softmax(class_logits(discriminator.apply({"params": d_params}, x_hat), num_classes))
        counterfactuals.append(x_hat)
        maps.append(saliency.counterfactual_saliency(images, x_hat, reduce))
        reached.append(probabilities[:, target])
    maps, reached = jnp.stack(maps, axis=1), jnp.stack(reached, axis=1)
    edit = maps.mean(axis=(2, 3))
    # Own class excluded; among equally reachable targets, the smaller edit wins.
    score = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, reached - 1e-6 * edit)
    return {"counterfactuals": jnp.stack(counterfactuals, axis=1), "maps": maps, "target_probability": reached,
            "edit_size": edit, "nearest": jnp.argmax(score, axis=1)}


def outline(panel, colour=(0.0, 1.0, 0.0), width: int = 1):
    """A copy of an (H, W, 3) panel with a coloured frame (marks the nearest target in figures)."""
    framed = np.array(panel, np.float32)
    framed[:width], framed[-width:], framed[:, :width], framed[:, -width:] = colour, colour, colour, colour
    return framed
