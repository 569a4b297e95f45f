"""FAB-T, the targeted fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack", ICML), L-inf: it looks for the *smallest* perturbation
that flips the decision, then counts an example as broken when that perturbation fits the budget.

Each iteration linearises the boundary between the target class and the defended one (the true class;
for D's adaptive attack, max(true, fake)), projects both the current iterate and the clean image onto it
(the minimal L-inf step within [0, 1]), and moves to a mix of the two, biased towards the clean image's
projection when the iterate has drifted far (weight a1 / (a1 + a2), at most `ALPHA_MAX`), overshooting by
`ETA`. Whenever the iterate is adversarial and smaller than the best so far it is kept, then pulled
back towards the clean image by `BETA`. No step size, no loss: it needs only logits and their gradient.
One departure from the reference: the step towards the boundary is at least `MIN_STEP`, so an iterate
within float32 resolution of the boundary still crosses it.
The targets are the wrong classes ranked 1, 2, ... on the clean image, one run each.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cfjax.attacks import geometry, objectives
from cfjax.attacks.pgd import AttackResult

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9  # the reference's defaults
# The smallest step towards the boundary an iterate takes (16 float32 ulps of a pixel in [0.5, 1); 0.00024/255).
# Near the boundary the projected step shrinks with the gap; once it falls below a pixel's float32
# resolution, x + step == x and an iterate still on the clean side never crosses (a fixed point; the
# reference escapes it only by rounding noise). Measured on a trained D: without it cfjax's FAB-T ended
# >5 % above torchattacks' minimal norm on 16 of 128 images (docs/robustness.md).
MIN_STEP = 2.0 ** -20
_BISECTIONS = 40  # halvings of the radius in [0, 1]: below float32 resolution


def project_to_plane(points: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Per row of (B, D) `points`: the smallest-L-inf step d with w.(p + d) = b and p + d in [0, 1]^D (the
    largest reachable step towards the plane where it lies out of reach). For radius r the best reachable
    w.d grows monotonically with r, so r is found by bisection."""
    needed = b - jnp.sum(w * points, axis=-1)
    direction = jnp.sign(needed)[:, None] * w  # raise direction.d to |needed|

    def best_step(radius):
        up, down = jnp.minimum(radius[:, None], 1.0 - points), jnp.maximum(-radius[:, None], -points)
        return jnp.where(direction > 0, up, jnp.where(direction < 0, down, 0.0))

    def halve(_, bounds):
        low, high = bounds
        middle = 0.5 * (low + high)
        enough = jnp.sum(direction * best_step(middle), axis=-1) >= jnp.abs(needed)
        return jnp.where(enough, low, middle), jnp.where(enough, middle, high)

    zeros = jnp.zeros(points.shape[:1])
    _, radius = jax.lax.fori_loop(0, _BISECTIONS, halve, (zeros, zeros + 1.0))
    return best_step(radius)


def fab_targeted(logits_fn: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray, labels: jnp.ndarray,
                 epsilon, *, num_classes: int, iterations: int = 100, joint: bool = False,
                 target_rank: int = 1) -> AttackResult:
    """One FAB-T run (L-inf) towards the wrong class ranked `target_rank` on the clean image. The result's
    `adversarial` is the smallest flip found, `success` says it flips the decision within `epsilon`, and
    `objective` is minus its L-inf norm (-inf where no flip was found). Pure and jittable."""
    batch = images.shape[0]
    flat = lambda v: v.reshape(batch, -1)
    targets = objectives.ranked_targets(logits_fn(images), labels, num_classes, target_rank)

    def boundary(x):
        logits = logits_fn(x)
        target = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
        value = target - objectives.defended_logit(logits, labels, num_classes, joint)
        return value.sum(), value

    def adversarial(x):
        return objectives.succeeded(logits_fn(x), labels, num_classes=num_classes, targeted=False, joint=joint)

    origin = flat(images)
    none = (images, jnp.full((batch,), jnp.inf))  # best flip so far and its norm

    def iteration(_, carry):
        x, (best, norm) = carry
        gradient, value = jax.grad(boundary, has_aux=True)(x)
        w = flat(gradient)
        b = jnp.sum(w * flat(x), axis=-1) - value  # the linearised boundary: w.z = b
        step_x, step_origin = project_to_plane(flat(x), w, b), project_to_plane(origin, w, b)
        a1 = jnp.maximum(jnp.max(jnp.abs(step_x), axis=-1), 1e-8)
        a2 = jnp.maximum(jnp.max(jnp.abs(step_origin), axis=-1), 1e-8)
        step_x = step_x * jnp.maximum(1.0, MIN_STEP / a1)[:, None]  # see MIN_STEP (alpha uses the exact step)
        alpha = jnp.clip(a1 / (a1 + a2), 0.0, ALPHA_MAX)[:, None]
        moved = jnp.clip((flat(x) + ETA * step_x) * (1 - alpha) + (origin + ETA * step_origin) * alpha, 0.0, 1.0)
        moved = moved.reshape(images.shape)
        flipped = adversarial(moved)
        size = geometry.distance(images, moved, "linf")
        smaller = flipped & (size < norm)
        keep = smaller.reshape((batch,) + (1,) * (images.ndim - 1))
        best, norm = jnp.where(keep, moved, best), jnp.where(smaller, size, norm)
        pulled = jnp.where(flipped.reshape(keep.shape), images + BETA * (moved - images), moved)
        return pulled, (best, norm)

    _, (best, norm) = jax.lax.fori_loop(0, iterations, iteration, (images, none))
    clean_wrong = adversarial(images)
    norm = jnp.where(clean_wrong, 0.0, norm)
    return AttackResult(best, norm <= epsilon, -norm)
