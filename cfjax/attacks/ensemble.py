"""An AutoAttack-style ensemble (Croce & Hein 2020) as one jitted call: APGD-CE, APGD-T (targeted DLR),
FAB-T and Square, run in turn; an example counts as robust only if every member fails, and the result
records which member broke it first.

Members are picked by how many logits the attacked decision reads (K; K+1 for D's adaptive, joint
decision): DLR needs >= 3, targeted DLR >= 4, so a binary classifier gets APGD-CE + FAB-T + Square, as
the reference's "standard" version does for 2 classes. Where both DLR forms are valid, the untargeted
APGD-DLR runs too (the reference's "plus" and "rand" versions use it). A member is skipped (`lax.cond`)
once every example of the batch is broken. The reference attacks only the points still robust; over a
whole split, `cfjax.robustness.ensemble_sweep` does that, one member at a time with `run_member`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from cfjax import parallel
from cfjax.attacks import objectives
from cfjax.attacks.auto_pgd import apgd
from cfjax.attacks.fab import fab_targeted
from cfjax.attacks.square_search import square

MEMBERS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
CLEAN = "clean"  # "broken by clean": misclassified before any attack


@dataclasses.dataclass(frozen=True)
class EnsembleSpec:
    """The static part (one compilation); epsilon is traced. Defaults follow AutoAttack's "standard" L-inf
    version: 100 APGD / FAB iterations, 9 target classes (as many as there are wrong classes, up to 9),
    5000 Square queries. `joint` attacks D's decision over all K+1 logits ("fake" must lose too).
    `members` (empty: all valid ones) restricts the ensemble, for checks and tests. `square_shared_proposals`
    draws Square's windows per batch as AutoAttack's PyTorch code does (see `square_search`), for
    cross-checks; per example (the default) is stronger and independent of the other images of the batch."""

    num_classes: int
    joint: bool = False
    iterations: int = 100
    targets: int = 9
    queries: int = 5000
    members: tuple = ()
    square_shared_proposals: bool = False

    def __post_init__(self):
        for field in ("iterations", "targets", "queries"):
            if getattr(self, field) < 1:
                raise ValueError(f"EnsembleSpec.{field} must be >= 1, got {getattr(self, field)}")
        unknown = [m for m in self.members if m not in MEMBERS]
        if unknown:
            raise ValueError(f"EnsembleSpec.members: unknown {unknown[0]!r}; choose from {MEMBERS}")
        if self.num_classes < 2:
            raise ValueError(f"an ensemble needs num_classes >= 2, got {self.num_classes}")

    @property
    def attacked_logits(self) -> int:
        return self.num_classes + (1 if self.joint else 0)

    @property
    def num_targets(self) -> int:
        return min(self.targets, self.num_classes - 1)

    def valid_members(self) -> tuple[str, ...]:
        """The members the attacked logits allow, in the order they run (cheapest and strongest first)."""
        needs = {"apgd-ce": 2, "apgd-dlr": objectives.min_logits("dlr"), "apgd-t": objectives.min_logits(
            "dlr_targeted"), "fab-t": 2, "square": 2}
        chosen = self.members or MEMBERS
        return tuple(m for m in MEMBERS if m in chosen and self.attacked_logits >= needs[m])


class EnsembleResult(NamedTuple):
    """Per example: the worst case found (the first member's adversarial that broke it, else the clean image),
    whether any member broke it, and who did: an index into `names` (0 = misclassified clean)."""

    adversarial: jnp.ndarray
    success: jnp.ndarray
    broken_by: jnp.ndarray


def member_names(spec: EnsembleSpec) -> tuple[str, ...]:
    """The labels of `EnsembleResult.broken_by`, index 0 being the clean image."""
    return (CLEAN,) + spec.valid_members()


def member_key(key: jax.Array, name: str) -> jax.Array:
    """A member's randomness: `fold_in(key, its index in MEMBERS)`, whichever members run with it."""
    return jax.random.fold_in(key, MEMBERS.index(name))


def run_member(name: str, logits_fn: Callable, images: jnp.ndarray, labels: jnp.ndarray, key: jax.Array, epsilon, *,
               spec: EnsembleSpec) -> tuple[jnp.ndarray, jnp.ndarray]:
    """One member (key already `member_key`'s) on a batch: per example, whether it broke it and the adversarial
    image, its targets or restarts folded in as it defines them (the first run that broke an example wins)."""
    common = dict(num_classes=spec.num_classes, joint=spec.joint)
    if name == "apgd-ce":
        runs = [apgd(logits_fn, images, labels, key, epsilon, loss="ce", iterations=spec.iterations, **common)]
    elif name == "apgd-dlr":
        runs = [apgd(logits_fn, images, labels, key, epsilon, loss="dlr", iterations=spec.iterations, **common)]
    elif name == "apgd-t":
        runs = [apgd(logits_fn, images, labels, jax.random.fold_in(key, rank), epsilon, loss="dlr_targeted",
                     iterations=spec.iterations, target_rank=rank, **common) for rank in range(1, spec.num_targets + 1)]
    elif name == "fab-t":
        runs = [fab_targeted(logits_fn, images, labels, epsilon, iterations=spec.iterations, target_rank=rank, **common)
                for rank in range(1, spec.num_targets + 1)]
    else:
        runs = [square(logits_fn, images, labels, key, epsilon, queries=spec.queries,
                       shared_proposals=spec.square_shared_proposals, **common)]
    success, adversarial = runs[0].success, runs[0].adversarial
    for run in runs[1:]:
        adversarial = jnp.where(_rows(run.success & ~success, images), run.adversarial, adversarial)
        success = success | run.success
    return success, adversarial


def _rows(mask: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def autoattack(logits_fn: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray, labels: jnp.ndarray,
               key: jax.Array, epsilon, *, spec: EnsembleSpec) -> EnsembleResult:
    """Every valid member on the batch (L-inf, images in [0, 1], `labels` the true classes); pure and jittable.
    Each member uses `fold_in(key, its index in MEMBERS)`, so its randomness does not depend on which members
    run with it: a member alone finds exactly what it finds inside the ensemble."""
    clean_wrong = objectives.succeeded(logits_fn(images), labels, num_classes=spec.num_classes, targeted=False,
                                       joint=spec.joint)
    success, adversarial = clean_wrong, images
    broken_by = jnp.where(clean_wrong, 0, -1)
    for index, name in enumerate(spec.valid_members(), start=1):
        skipped = lambda: (jnp.zeros_like(clean_wrong), images)
        run = lambda name=name: run_member(name, logits_fn, images, labels, member_key(key, name), epsilon, spec=spec)
        broke, found = jax.lax.cond(jnp.all(success), skipped, run)
        new = broke & ~success
        adversarial = jnp.where(_rows(new, images), found, adversarial)
        broken_by = jnp.where(new, index, broken_by)
        success = success | broke
    return EnsembleResult(adversarial, success, broken_by)


def make_ensemble(apply_fn: Callable[[Any, jnp.ndarray], jnp.ndarray], spec: EnsembleSpec, mesh: Mesh | None = None,
                  *, max_traces: int | None = None) -> Callable:
    """`attack(params, images, labels, key, epsilon) -> EnsembleResult`, jitted once for every epsilon.
    With a mesh the batch is split over its 'data' axis, as `attacks.make_attack` does."""

    def attack(params, images, labels, key, epsilon):
        return autoattack(lambda x: apply_fn(params, x), images, labels, key, epsilon, spec=spec)

    if max_traces is not None:
        attack = chex.assert_max_traces(attack, n=max_traces)
    if mesh is None:
        jitted = jax.jit(attack)
    else:
        batch, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
        jitted = jax.jit(attack, in_shardings=(replicated, batch, batch, replicated, replicated),
                         out_shardings=EnsembleResult(batch, batch, batch))

    def run(params, images, labels, key, epsilon) -> EnsembleResult:
        return jitted(params, images, labels, key, np.float32(epsilon))

    return run
