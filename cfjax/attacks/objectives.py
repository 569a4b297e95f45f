"""What an attack maximises, per sample, from a model's logits.

The attacked decision is the argmax over the first `num_classes` logits: for D (K+1 outputs) that is
its hybrid class readout. The extra "fake" logit is used by the adaptive attack on D, which must beat
the detector too: its "joint_margin" loss asks a wrong real class to outscore both the true class and
"fake" (Carlini & Wagner's attack on a detector folded into the classifier), and an optional term
adds weight x D's "real" log-odds.
"""

import jax
import jax.numpy as jnp
import optax

LOSSES = ("ce", "margin", "joint_margin")  # joint_margin: D only (needs the fake logit)


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
    if loss not in ("ce", "margin"):
        raise ValueError(f"class_loss takes 'ce' or 'margin', got {loss!r}")
    if loss == "ce":
        value = optax.softmax_cross_entropy_with_integer_labels(class_logits, labels)
    else:
        value = -_margin(class_logits, labels)
    return -value if targeted else value


def real_log_odds(logits: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """log((1 - p_fake) / p_fake) of a (K+1)-output D: high when D takes the input for a real image."""
    return jax.nn.logsumexp(logits[..., :num_classes], axis=-1) - logits[..., num_classes]


def joint_margin(logits: jnp.ndarray, labels: jnp.ndarray, num_classes: int, targeted: bool) -> jnp.ndarray:
    """Over D's K+1 logits, positive iff the attacker wins outright. Untargeted: the best wrong real class
    minus max(true class, fake); targeted: the target minus every other logit, fake included."""
    if targeted:
        return _margin(logits, labels)
    real = logits[..., :num_classes]
    true_or_fake = jnp.maximum(jnp.take_along_axis(real, labels[:, None], axis=-1)[:, 0], logits[..., num_classes])
    wrong = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, real)
    return jnp.max(wrong, axis=-1) - true_or_fake


def _require_fake_logit(logits: jnp.ndarray, num_classes: int) -> None:
    if logits.shape[-1] != num_classes + 1:
        raise ValueError(f"an adaptive attack needs K+1 = {num_classes + 1} logits (D's), got {logits.shape[-1]}")


def objective(logits: jnp.ndarray, labels: jnp.ndarray, *, num_classes: int, loss: str, targeted: bool,
              detector_weight: float) -> jnp.ndarray:
    """The per-sample value an attack raises: the class loss (or D's joint margin), plus weight x D's
    real log-odds when `detector_weight` > 0."""
    if loss == "joint_margin":
        _require_fake_logit(logits, num_classes)
        value = joint_margin(logits, labels, num_classes, targeted)
    else:
        value = class_loss(logits[..., :num_classes], labels, loss, targeted)
    if detector_weight:
        _require_fake_logit(logits, num_classes)
        value = value + detector_weight * real_log_odds(logits, num_classes)
    return value


def succeeded(logits: jnp.ndarray, labels: jnp.ndarray, *, num_classes: int, targeted: bool,
              joint: bool = False) -> jnp.ndarray:
    """Whether the decision is wrong (untargeted) or equals the target (targeted), per sample. With
    `joint` (the adaptive attack on D) the decision is the argmax over all K+1 logits, so an example
    that D flags as fake has not succeeded."""
    predicted = jnp.argmax(logits if joint else logits[..., :num_classes], axis=-1)
    if targeted:
        return predicted == labels
    return (predicted != labels) & (predicted < num_classes)


def attacked_logits(logits: jnp.ndarray, num_classes: int, joint: bool) -> jnp.ndarray:
    """The logits whose argmax the attack targets: the K real ones, or all K+1 of D for the adaptive attack."""
    if joint:
        _require_fake_logit(logits, num_classes)
        return logits
    return logits[..., :num_classes]


def defended_logit(logits: jnp.ndarray, labels: jnp.ndarray, num_classes: int, joint: bool) -> jnp.ndarray:
    """What a wrong class must beat: the true class's logit, or for the adaptive attack max(true, fake)."""
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return jnp.maximum(true, logits[..., num_classes]) if joint else true


def untargeted_margin(logits: jnp.ndarray, labels: jnp.ndarray, num_classes: int, joint: bool) -> jnp.ndarray:
    """The best wrong real class minus what it must beat: positive iff the untargeted attack has won."""
    real = logits[..., :num_classes]
    wrong = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, real)
    return jnp.max(wrong, axis=-1) - defended_logit(logits, labels, num_classes, joint)


def _sorted_descending(logits: jnp.ndarray) -> jnp.ndarray:
    return -jnp.sort(-logits, axis=-1)


def min_logits(loss: str) -> int:
    """How many attacked logits a loss needs: DLR divides by z_(1) - z_(3), targeted DLR also reads z_(4)
    (Croce & Hein 2020); on fewer logits the denominator is undefined, as the reference refuses too."""
    return {"ce": 2, "dlr": 3, "dlr_targeted": 4}[loss]


def dlr(logits: jnp.ndarray, labels: jnp.ndarray, num_classes: int, joint: bool) -> jnp.ndarray:
    """Difference of logits ratio: margin / (z_(1) - z_(3)), invariant to shifting and scaling the logits."""
    ranked = _sorted_descending(attacked_logits(logits, num_classes, joint))
    if ranked.shape[-1] < 3:
        raise ValueError(f"the DLR loss needs >= 3 attacked logits, got {ranked.shape[-1]}")
    return untargeted_margin(logits, labels, num_classes, joint) / (ranked[..., 0] - ranked[..., 2] + 1e-12)


def dlr_targeted(logits: jnp.ndarray, labels: jnp.ndarray, targets: jnp.ndarray, num_classes: int,
                 joint: bool) -> jnp.ndarray:
    """Targeted DLR: (z_t - z_y) / (z_(1) - (z_(3) + z_(4)) / 2); raised, it makes target t beat the true class y."""
    ranked = _sorted_descending(attacked_logits(logits, num_classes, joint))
    if ranked.shape[-1] < 4:
        raise ValueError(f"the targeted DLR loss needs >= 4 attacked logits, got {ranked.shape[-1]}")
    target = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    margin = target - defended_logit(logits, labels, num_classes, joint)
    return margin / (ranked[..., 0] - 0.5 * (ranked[..., 2] + ranked[..., 3]) + 1e-12)


def ranked_targets(logits: jnp.ndarray, labels: jnp.ndarray, num_classes: int, rank: int) -> jnp.ndarray:
    """The wrong real class with the `rank`-th highest logit (1: the runner-up), the targets of APGD-T and FAB-T."""
    real = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, logits[..., :num_classes])
    return jnp.argsort(-real, axis=-1)[:, rank - 1]
