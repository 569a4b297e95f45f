"""The Square attack (Andriushchenko, Croce, Flammarion, Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV), L-inf: random search that reads only the logits, never a
gradient, so it cannot be fooled by masked or obfuscated gradients. That is why AutoAttack includes it.

It starts from vertical stripes of +-epsilon, then each query proposes to set one random square window
(side shrinking on the reference's schedule of `P_INIT`) to +-2 epsilon per
channel, projected back into the ball, and keeps the proposal where it raises the attacker's margin (the best
wrong class minus the true class; for D's adaptive attack, the best wrong real class minus max(true, fake)). An
example, once broken, is not changed again.

Each example draws its own window and signs, as the Square paper's code does: stronger, and an example's
search does not depend on the other images of its batch (its random draws are those of its row, so they do
depend on its position and the batch size, as the attack's seed does). AutoAttack's PyTorch port (and
torchattacks, which copies it) draws one window and one sign per channel for the whole batch at each query;
`shared_proposals=True` does the same, for comparisons with those implementations
(experiments/attack_cross_check.py).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cfjax.attacks import geometry, objectives
from cfjax.attacks.pgd import AttackResult

P_INIT = 0.8  # the share of pixels the first window covers (AutoAttack's setting)
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def window_share(query: jnp.ndarray, total_queries: int) -> jnp.ndarray:
    """p at this query: P_INIT halved at the reference's milestones, rescaled from 10,000 queries."""
    scaled = (query * 10000) // total_queries
    divisor = jnp.asarray(1.0)
    for bound, value in _SCHEDULE:
        divisor = jnp.where(scaled > bound, value * 2.0, divisor)
    return P_INIT / divisor


def proposed_change(key: jax.Array, share, shape: tuple, shared: bool) -> jnp.ndarray:
    """One query's proposal as a (B or 1, H, W, C) array: +-1 per channel in a random square window covering
    `share` of the pixels, 0 elsewhere; one window and sign vector for the whole batch when `shared`."""
    batch, height, width, channels = shape
    drawn = 1 if shared else batch
    side = jnp.round(jnp.sqrt(share * height * width))
    side = jnp.clip(side, 1, max(min(height, width) - 1, 1)).astype(jnp.int32)
    row_key, column_key, sign_key = jax.random.split(key, 3)
    # The window's corner in [0, H - side), as every reference draws it (the Square paper's code, AutoAttack and
    # torchattacks: `randint(0, h - s)`), so it never reaches the last row and column after the stripes.
    top = jax.random.randint(row_key, (drawn, 1, 1, 1), 0, height - side)
    left = jax.random.randint(column_key, (drawn, 1, 1, 1), 0, width - side)
    rows, columns = jnp.arange(height)[None, :, None, None], jnp.arange(width)[None, None, :, None]
    inside = (rows >= top) & (rows < top + side) & (columns >= left) & (columns < left + side)
    signs = jax.random.choice(sign_key, jnp.array([-1.0, 1.0]), (drawn, 1, 1, channels))
    return jnp.where(inside, signs, 0.0)


def square(logits_fn: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray, labels: jnp.ndarray, key: jax.Array,
           epsilon, *, num_classes: int, queries: int = 5000, joint: bool = False,
           shared_proposals: bool = False) -> AttackResult:
    """`queries` rounds of random search on (B, H, W, C) images in [0, 1]. The objective is the attacker's margin
    (>= 0 once broken). Pure and jittable; `queries` must be a Python int (it fixes the schedule)."""
    batch, height, width, channels = images.shape

    def margin(x):  # the attacker's margin: >= 0 once broken
        return objectives.untargeted_margin(logits_fn(x), labels, num_classes, joint)

    stripe_key, key = jax.random.split(key)
    stripes = jax.random.choice(stripe_key, jnp.array([-1.0, 1.0]), (batch, 1, width, channels))
    start = geometry.project(images, images + epsilon * stripes, epsilon, "linf")

    def query(i, carry):
        best, best_margin = carry
        change = proposed_change(jax.random.fold_in(key, i), window_share(i, queries), images.shape, shared_proposals)
        proposal = geometry.project(images, best + 2.0 * epsilon * change, epsilon, "linf")
        proposed = margin(proposal)
        take = (proposed > best_margin) & (best_margin < 0)  # still unbroken, and the margin drops
        best = jnp.where(take[:, None, None, None], proposal, best)
        return best, jnp.where(take, proposed, best_margin)

    best, value = jax.lax.fori_loop(0, queries, query, (start, margin(start)))
    success = objectives.succeeded(logits_fn(best), labels, num_classes=num_classes, targeted=False, joint=joint)
    return AttackResult(best, success, value)
