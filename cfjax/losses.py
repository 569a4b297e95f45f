"""Pure loss functions of the counterfactual GAN (docs/design.md, section 1).

D: CE(D(x), y) + w_fake * [CE(D(sg(x_hat)), FAKE) + sum_k CE(D(sg(x_cycle_k)), FAKE)]
   (robust GAN: x replaced by its PGD example x_adv; with the detector option, x stays and
   CE_K(D(x_adv), y) + s * w_fake * CE(D(x_adv), FAKE) is added, CE_K over the K class logits only,
   s = adversarial_training.fake_weight_scale)
G: w_adv * CE(D(x_hat), t) + w_cls * CE(y_hat(x), y) + w_cyc * sum_k |x_2k - x|_1 + w_prox * |x_hat - x|_1
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Mean softmax cross-entropy against integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def mean_abs(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Mean absolute difference (the L1 terms, per pixel and channel)."""
    return jnp.abs(a - b).mean()


def sample_targets(key: jax.Array, labels: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """A counterfactual target per image, uniform among the classes other than its own.

    (y + r) mod K with r uniform in 1..K-1 is uniform over the other classes; for K = 2 it is 1 - y.
    """
    shift = jax.random.randint(key, labels.shape, 1, num_classes)
    return (labels + shift) % num_classes


def discriminator_loss(
    real_logits: jnp.ndarray,
    labels: jnp.ndarray,
    fake_logits: Sequence[jnp.ndarray],
    *,
    fake_weight: float,
) -> tuple[jnp.ndarray, dict]:
    """Real images into their class, every generated image into the last ("fake") class. The weight has
    no default: it comes from `config.loss`, the one place its value is set."""
    fake_class = real_logits.shape[-1] - 1
    real_term = cross_entropy(real_logits, labels)
    fake_term = sum(
        cross_entropy(logits, jnp.full(logits.shape[:1], fake_class)) for logits in fake_logits
    )
    loss = real_term + fake_weight * fake_term
    return loss, {"d_real_ce": real_term, "d_fake_ce": fake_term}


def detector_loss(adversarial_logits: jnp.ndarray, labels: jnp.ndarray, *, fake_weight: float
                  ) -> tuple[jnp.ndarray, dict]:
    """D's loss on PGD examples of real images when it also flags them (the robust GAN's detector
    option): its class readout (the first K logits) learns their true class, and its K+1 outputs learn
    them as "fake". The two do not compete: the class CE is blind to the fake logit."""
    num_classes = adversarial_logits.shape[-1] - 1
    class_term = cross_entropy(adversarial_logits[..., :num_classes], labels)
    fake_term = cross_entropy(adversarial_logits, jnp.full(adversarial_logits.shape[:1], num_classes))
    return class_term + fake_weight * fake_term, {"d_detector_class_ce": class_term,
                                                  "d_detector_fake_ce": fake_term}


def generator_loss(
    counterfactual_logits: jnp.ndarray,
    targets: jnp.ndarray,
    head_logits: jnp.ndarray,
    labels: jnp.ndarray,
    images: jnp.ndarray,
    counterfactual: jnp.ndarray,
    cycle_images: Sequence[jnp.ndarray],
    *,
    adversarial_weight: float,
    cls_weight: float,
    cycle_weight: float,
    prox_weight: float,
) -> tuple[jnp.ndarray, dict]:
    """G wants D to put x_hat in class t, its head to classify x, cycles to return, and edits small.
    The weights have no defaults: they come from `config.loss`, the one place their values are set."""
    adversarial = cross_entropy(counterfactual_logits, targets)
    head = cross_entropy(head_logits, labels)
    cycle = sum((mean_abs(x_back, images) for x_back in cycle_images), jnp.zeros(()))
    proximity = mean_abs(counterfactual, images)
    loss = (
        adversarial_weight * adversarial
        + cls_weight * head
        + cycle_weight * cycle
        + prox_weight * proximity
    )
    terms = {"g_adv_ce": adversarial, "g_head_ce": head, "g_cycle_l1": cycle, "g_prox_l1": proximity}
    return loss, terms


def sigmoid_binary_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """Mean per-pixel BCE of segmentation logits against a {0, 1} mask."""
    return optax.sigmoid_binary_cross_entropy(logits, targets.astype(logits.dtype)).mean()


def soft_dice_loss(probabilities: jnp.ndarray, targets: jnp.ndarray, smooth: float = 1.0) -> jnp.ndarray:
    """1 - soft Dice over the whole batch: balances the ~2% of crack pixels that BCE alone under-weights."""
    targets = targets.astype(probabilities.dtype)
    overlap = jnp.sum(probabilities * targets)
    return 1.0 - (2.0 * overlap + smooth) / (jnp.sum(probabilities) + jnp.sum(targets) + smooth)
