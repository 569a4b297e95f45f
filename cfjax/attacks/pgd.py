"""Projected gradient descent (Madry et al. 2018), composed of a start (zero or uniform in the ball), a
step (steepest ascent for the norm, or any optax optimiser), a projection (ball and [0, 1]) and an
objective on logits (cross-entropy or margin, untargeted or targeted; for D, the adaptive joint margin
that must also beat its "fake" output). The iterations run in `lax.fori_loop` under one jit.

Two choices make the figures trustworthy:
* `epsilon` and `step_size` are traced arguments, so a sweep over budgets compiles once; so is
  `num_steps` where the loop stays rolled (GPU, TPU). On a CPU the loop is unrolled by default:
  XLA:CPU runs convolutions inside a loop body several times slower than outside one (measured 6x
  on D's input gradient; jax-ml/jax#12868), so there `num_steps` is static and each iteration count
  compiles once and is cached;
* each sample keeps its most adversarial iterate (first a success, then the highest objective), over
  iterations and over restarts: more iterations or restarts can never make the attack weaker, and
  restart r always uses `fold_in(key, r)`, so R + 1 restarts extend R restarts.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from cfjax import parallel
from cfjax.attacks import geometry, objectives

STARTS = ("zero", "uniform")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """The static part of an attack (one compilation each); the budget is passed at call time.

    `num_classes` is K: the decision attacked is the argmax over the first K logits. The adaptive attack
    on D (K+1 logits) uses `loss="joint_margin"`, which also counts success over all K+1 logits (a wrong
    real class must beat "fake"); `detector_weight` > 0 adds weight x D's real log-odds to any loss.
    `optimizer` None means steepest ascent (signed gradient for L-inf, normalised gradient for L2); an
    optax transformation with learning rate 1 is scaled by the step size instead.
    """

    num_classes: int
    norm: str = "linf"
    loss: str = "ce"
    targeted: bool = False
    start: str = "uniform"
    restarts: int = 1
    detector_weight: float = 0.0
    optimizer: optax.GradientTransformation | None = None
    unroll: bool | None = None  # None: unrolled on CPU (see the module docstring), rolled elsewhere

    @property
    def unrolled(self) -> bool:
        return jax.default_backend() == "cpu" if self.unroll is None else self.unroll

    def __post_init__(self):
        geometry.check_norm(self.norm)
        if self.loss not in objectives.LOSSES:
            raise ValueError(f"loss must be one of {objectives.LOSSES}, got {self.loss!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")
        if self.restarts > 1 and self.start == "zero":
            raise ValueError("restarts > 1 need start='uniform': zero starts would all repeat the same run")
        if self.detector_weight < 0:
            raise ValueError(f"detector_weight must be >= 0, got {self.detector_weight}")


class AttackResult(NamedTuple):
    """Per sample: the adversarial image, whether the attack succeeded, and the objective reached."""

    adversarial: jnp.ndarray
    success: jnp.ndarray
    objective: jnp.ndarray


def _better(new: AttackResult, old: AttackResult) -> jnp.ndarray:
    """New beats old if it succeeds where old does not, or ties on success with a strictly higher objective."""
    return (new.success & ~old.success) | ((new.success == old.success) & (new.objective > old.objective))


def _keep_better(new: AttackResult, old: AttackResult) -> AttackResult:
    take = _better(new, old)
    pick = lambda a, b: jnp.where(take.reshape(take.shape + (1,) * (a.ndim - 1)), a, b)
    return AttackResult(*(pick(a, b) for a, b in zip(new, old)))


def _materialised(x: jnp.ndarray, runtime_flag: jnp.ndarray) -> jnp.ndarray:
    """`x`, computed once and kept in memory: for unrolled loops.

    Unrolled, each iterate is a chain of elementwise updates over all earlier gradients, and XLA:CPU fuses
    that whole chain into every consumer, so iteration k recomputes k updates inside D's first layer:
    quadratic in the iteration count, 28 % of PGD-10's operation time at 64 px
    (experiments/benchmarks/profile_step.py). XLA:CPU drops `lax.optimization_barrier` before fusion,
    but does not fuse across a conditional. Both branches give `x`, so the flag's value never matters;
    for the conditional to survive, the flag must be known only at run time and unbatched (a constant
    is folded away, a batched one turns the conditional into a select), and a branch must compute `x`
    rather than forward it (`* 1.0`, exact for every float): JAX drops outputs every branch passes through.
    """
    return jax.lax.cond(runtime_flag, lambda v: v * 1.0, lambda v: v, x)


def _runtime_flag(key: jax.Array) -> jnp.ndarray:
    """A boolean known only at run time, replicated on every device: one bit of the attack's key."""
    return jax.random.key_data(key).reshape(-1)[0] % 2 == 0


def _single_run(logits_fn: Callable, images, labels, key, epsilon, step_size, num_steps, spec: AttackSpec,
                runtime_flag):
    scoring = dict(num_classes=spec.num_classes, targeted=spec.targeted)

    def evaluate(x):
        logits = logits_fn(x)
        values = objectives.objective(logits, labels, loss=spec.loss, detector_weight=spec.detector_weight, **scoring)
        success = objectives.succeeded(logits, labels, joint=spec.loss == "joint_margin", **scoring)
        return values.sum(), AttackResult(x, success, values)

    start = images
    if spec.start == "uniform":
        start = geometry.project(images, images + geometry.uniform_start(key, images.shape, epsilon, spec.norm),
                                 epsilon, spec.norm)
    optimizer = spec.optimizer
    opt_state = optimizer.init(start) if optimizer is not None else ()
    nothing_yet = AttackResult(start, jnp.zeros(labels.shape, bool), jnp.full(labels.shape, -jnp.inf))

    def iteration(_, carry):
        x, opt_state, best = carry
        (_, current), gradient = jax.value_and_grad(evaluate, has_aux=True)(x)
        if optimizer is None:
            update = geometry.steepest_ascent(gradient, spec.norm)
        else:  # optax minimises: feed it the negated gradient of the objective we raise
            update, opt_state = optimizer.update(-gradient, opt_state, x)
        x = geometry.project(images, x + step_size * update, epsilon, spec.norm)
        if spec.unrolled:  # a rolled loop keeps its carry in memory anyway
            x = _materialised(x, runtime_flag)
        return x, opt_state, _keep_better(current, best)

    if spec.unrolled and not isinstance(num_steps, int):
        raise ValueError("an unrolled attack needs num_steps as a Python int (make_attack passes it statically)")
    x, _, best = jax.lax.fori_loop(0, num_steps, iteration, (start, opt_state, nothing_yet),
                                   unroll=True if spec.unrolled else None)
    return _keep_better(evaluate(x)[1], best)


def pgd(logits_fn: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray, labels: jnp.ndarray, key: jax.Array,
        *, spec: AttackSpec, epsilon, step_size, num_steps) -> AttackResult:
    """Attack `logits_fn` (images in [0, 1] -> logits, in inference mode) around `images`.

    `labels` are the true classes (untargeted) or the targets (targeted). Restarts run batched (vmapped)
    and each sample keeps its worst case. Pure and jittable; `make_attack` jits it with shardings.
    """
    restart_keys = jnp.stack([jax.random.fold_in(key, r) for r in range(spec.restarts)])
    flag = _runtime_flag(key)  # computed outside the vmap over restarts, so it stays unbatched
    runs = jax.vmap(lambda k: _single_run(logits_fn, images, labels, k, epsilon, step_size, num_steps, spec, flag))(
        restart_keys)
    best = jax.tree.map(lambda a: a[0], runs)
    for r in range(1, spec.restarts):  # in order, strict improvements only: deterministic and prefix-stable
        best = _keep_better(jax.tree.map(lambda a, r=r: a[r], runs), best)
    return best


def make_attack(apply_fn: Callable[[Any, jnp.ndarray], jnp.ndarray], spec: AttackSpec, mesh: Mesh | None = None,
                *, max_traces: int | None = None) -> Callable:
    """`attack(params, images, labels, key, epsilon, step_size, num_steps) -> AttackResult`, jitted once
    (once per iteration count when the loop is unrolled).

    `apply_fn(params, images)` returns logits in inference mode. With a mesh the batch is split over its
    'data' axis and the parameters replicated, as in training. `max_traces` (tests) fails on a retrace.
    """

    def attack(params, images, labels, key, epsilon, step_size, num_steps):
        return pgd(lambda x: apply_fn(params, x), images, labels, key, spec=spec, epsilon=epsilon,
                   step_size=step_size, num_steps=num_steps)

    if max_traces is not None:
        attack = chex.assert_max_traces(attack, n=max_traces)
    static = (6,) if spec.unrolled else ()
    if mesh is None:
        jitted = jax.jit(attack, static_argnums=static)
    else:
        batch, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
        jitted = jax.jit(attack, in_shardings=(replicated, batch, batch) + (replicated,) * (4 - len(static)),
                         out_shardings=AttackResult(batch, batch, batch), static_argnums=static)

    def arguments(params, images, labels, key, epsilon, step_size, num_steps) -> tuple:
        # Fixed dtypes: a Python int epsilon (0) and a float one must not compile twice.
        steps = int(num_steps) if spec.unrolled else np.int32(num_steps)
        return params, images, labels, key, np.float32(epsilon), np.float32(step_size), steps

    def run(*args, **kwargs) -> AttackResult:
        return jitted(*arguments(*args, **kwargs))

    run.lower = lambda *args, **kwargs: jitted.lower(*arguments(*args, **kwargs))  # XLA's cost and memory analysis
    return run
