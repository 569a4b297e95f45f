"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML): PGD whose step size needs no tuning.

It starts at 2 epsilon and is halved, per example, at checkpoints placed at 22 %, then ever shorter
stretches of the budget, whenever fewer than 75 % of the steps since the last checkpoint raised the loss,
or the step was not halved last time and the best loss has not moved since; on halving, the example
restarts from its best iterate. Steps carry momentum 0.75. The losses: cross-entropy, the difference of
logits ratio (DLR, >= 3 logits) and its targeted form (>= 4 logits), which are invariant to rescaled
logits and so resist the gradient masking of saturated softmaxes.

Built from the PGD parts: the start, steepest step and projection of `geometry`, the success test of
`objectives`, and the best-iterate rule of `pgd` (a success first, then the highest loss). `epsilon` is
traced; the iteration count is static (it fixes the checkpoints), so a sweep over budgets compiles once.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from cfjax.attacks import geometry, objectives
from cfjax.attacks.pgd import AttackResult, _keep_better

LOSSES = ("ce", "dlr", "dlr_targeted")
MOMENTUM = 0.75  # the weight of the new step; 1 - MOMENTUM of the previous one
OSCILLATION = 0.75  # halve the step when at most this share of the steps since a checkpoint raised the loss


def checkpoints(iterations: int) -> list[tuple[int, int]]:
    """(iteration index, stretch length) of each step-size check: the first after max(0.22 N, 1) steps, each
    later stretch 0.03 N shorter, never below 0.06 N (the reference implementation's integer schedule)."""
    length, shrink, shortest = max(int(0.22 * iterations), 1), max(int(0.03 * iterations), 1), max(
        int(0.06 * iterations), 1)
    found, position = [], 0
    while position + length <= iterations:
        position += length
        found.append((position - 1, length))
        length = max(length - shrink, shortest)
    return found


def loss_value(name: str, logits: jnp.ndarray, labels: jnp.ndarray, targets: jnp.ndarray, num_classes: int,
               joint: bool) -> jnp.ndarray:
    """The per-example loss APGD raises. Against D's joint decision (adaptive), "ce" is its joint margin:
    cross-entropy on K+1 logits would be raised by pushing the input to "fake", which is no success."""
    if name == "ce":
        if joint:
            return objectives.joint_margin(logits, labels, num_classes, targeted=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits[..., :num_classes], labels)
    if name == "dlr":
        return objectives.dlr(logits, labels, num_classes, joint)
    if name == "dlr_targeted":
        return objectives.dlr_targeted(logits, labels, targets, num_classes, joint)
    raise ValueError(f"APGD's loss must be one of {LOSSES}, got {name!r}")


def apgd(logits_fn: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray, labels: jnp.ndarray, key: jax.Array,
         epsilon, *, num_classes: int, loss: str = "ce", iterations: int = 100, norm: str = "linf",
         joint: bool = False, target_rank: int = 1) -> AttackResult:
    """One APGD run from a uniform start. `labels` are the true classes; success means a wrong decision
    (for `loss="dlr_targeted"` too: the target, the wrong class ranked `target_rank` on the clean image, only
    steers the attack). Pure and jittable; `iterations` must be a Python int."""
    if loss not in LOSSES:
        raise ValueError(f"APGD's loss must be one of {LOSSES}, got {loss!r}")
    targets = objectives.ranked_targets(logits_fn(images), labels, num_classes, target_rank)

    def evaluate(x):
        logits = logits_fn(x)
        values = loss_value(loss, logits, labels, targets, num_classes, joint)
        success = objectives.succeeded(logits, labels, num_classes=num_classes, targeted=False, joint=joint)
        return values.sum(), AttackResult(x, success, values)

    gradient_of = jax.value_and_grad(evaluate, has_aux=True)
    start = geometry.project(images, images + geometry.uniform_start(key, images.shape, epsilon, norm), epsilon, norm)
    (_, current), gradient = gradient_of(start)
    per_example = lambda v: v.reshape(v.shape + (1,) * (images.ndim - 1))
    schedule = checkpoints(iterations)
    is_check = jnp.zeros(iterations, bool).at[jnp.array([i for i, _ in schedule], int)].set(True)
    length = jnp.zeros(iterations, jnp.float32).at[jnp.array([i for i, _ in schedule], int)].set(
        jnp.array([n for _, n in schedule], jnp.float32))
    batch = labels.shape
    carry = dict(x=start, previous=start, gradient=gradient, loss=current.objective,
                 step=jnp.full(batch, 2.0 * epsilon), x_max=start, gradient_max=gradient, loss_max=current.objective,
                 increases=jnp.zeros(batch), loss_max_at_check=current.objective, halved_at_check=jnp.ones(batch, bool),
                 best=current)

    def iteration(i, c):
        weight = jnp.where(i > 0, MOMENTUM, 1.0)
        step = per_example(c["step"])
        z = geometry.project(images, c["x"] + step * geometry.steepest_ascent(c["gradient"], norm), epsilon, norm)
        x = geometry.project(images, c["x"] + weight * (z - c["x"]) + (1 - weight) * (c["x"] - c["previous"]),
                             epsilon, norm)
        (_, new), gradient = gradient_of(x)
        raised = new.objective > c["loss_max"]
        keep = lambda a, b, mask=raised: jnp.where(per_example(mask), a, b)
        x_max, gradient_max = keep(x, c["x_max"]), keep(gradient, c["gradient_max"])
        loss_max = jnp.maximum(new.objective, c["loss_max"])
        increases = c["increases"] + (new.objective > c["loss"])
        # At a checkpoint: halve where the loss oscillated, or stalled after a stretch without halving.
        oscillated = increases <= OSCILLATION * length[i]
        stalled = ~c["halved_at_check"] & (c["loss_max_at_check"] >= loss_max)
        halve = is_check[i] & (oscillated | stalled)
        back = lambda a, b: jnp.where(per_example(halve), a, b)
        return dict(x=back(x_max, x), previous=c["x"], gradient=back(gradient_max, gradient), loss=new.objective,
                    step=jnp.where(halve, c["step"] / 2, c["step"]), x_max=x_max, gradient_max=gradient_max,
                    loss_max=loss_max, increases=jnp.where(is_check[i], 0.0, increases),
                    loss_max_at_check=jnp.where(is_check[i], loss_max, c["loss_max_at_check"]),
                    halved_at_check=jnp.where(is_check[i], halve, c["halved_at_check"]),
                    best=_keep_better(new, c["best"]))

    return jax.lax.fori_loop(0, iterations, iteration, carry)["best"]
