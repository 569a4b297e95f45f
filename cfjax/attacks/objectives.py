"""What an attack maximises, per sample, from a model's logits.

The attacked decision is the argmax over the first `num_classes` logits: for D (K+1 outputs) that is
its hybrid class readout, and the extra "fake" logit is only used by the adaptive term, which also
pushes D's p_fake down so that the detector is attacked together with the classifier.
"""

import jax
import jax.numpy as jnp
import optax

LOSSES = ("ce", "margin")


def _margin(class_logits: jnp.ndarray, classes: jnp.ndarray) -> jnp.ndarray:
    """z_c - max_{j != c} z_j: positive iff class c wins."""
    chosen = jnp.take_along_axis(class_logits, classes[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(classes, class_logits.shape[-1], dtype=bool), -jnp.inf, class_logits)
    return chosen - jnp.max(others, axis=-1)


def class_loss(class_logits: jnp.ndarray, labels: jnp.ndarray, loss: str, targeted: bool) -> jnp.ndarray:
    """Untargeted: raise the loss of the true `labels`; targeted: make `labels` (the targets) win.

    "ce" is softmax cross-entropy; "margin" is the Carlini-Wagner logit margin, which does not saturate
    when the softmax does (a standard check against gradient masking).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "ce":
        value = optax.softmax_cross_entropy_with_integer_labels(class_logits, labels)
    else:
        value = -_margin(class_logits, labels)
    return -value if targeted else value


def real_log_odds(logits: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """log((1 - p_fake) / p_fake) of a (K+1)-output D: high when D takes the input for a real image."""
    return jax.nn.logsumexp(logits[..., :num_classes], axis=-1) - logits[..., num_classes]


def objective(logits: jnp.ndarray, labels: jnp.ndarray, *, num_classes: int, loss: str, targeted: bool,
              detector_weight: float) -> jnp.ndarray:
    """The per-sample value an attack raises: the class loss, plus (adaptive) weight x real log-odds."""
    value = class_loss(logits[..., :num_classes], labels, loss, targeted)
    if detector_weight:
        if logits.shape[-1] != num_classes + 1:
            raise ValueError(f"an adaptive attack needs K+1 = {num_classes + 1} logits (D's), got {logits.shape[-1]}")
        value = value + detector_weight * real_log_odds(logits, num_classes)
    return value


def succeeded(logits: jnp.ndarray, labels: jnp.ndarray, *, num_classes: int, targeted: bool) -> jnp.ndarray:
    """Whether the decision is wrong (untargeted) or equals the target (targeted), per sample."""
    predicted = jnp.argmax(logits[..., :num_classes], axis=-1)
    return predicted == labels if targeted else predicted != labels
