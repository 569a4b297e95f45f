"""The threat model's geometry: where an attack may start, which way it steps, and how it is pulled back
into the allowed set {x' : ||x' - x|| <= epsilon, x' in [0, 1]} (images on cfjax's [0, 1] scale).

Every function works per sample on (B, ...) arrays; `epsilon` and `step_size` may be traced scalars,
so a sweep over budgets reuses one compiled attack.
"""

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
_TINY = 1e-12


def _per_sample_l2(values: jnp.ndarray) -> jnp.ndarray:
    """||v||_2 of each sample, shaped (B, 1, ..., 1) to broadcast against v."""
    axes = tuple(range(1, values.ndim))
    return jnp.sqrt(jnp.sum(jnp.square(values), axis=axes, keepdims=True))


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def uniform_start(key: jax.Array, shape: tuple, epsilon, norm: str) -> jnp.ndarray:
    """A perturbation drawn uniformly from the epsilon-ball (a random start; restarts differ by key)."""
    if check_norm(norm) == "linf":
        return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0) * epsilon
    direction_key, radius_key = jax.random.split(key)
    direction = jax.random.normal(direction_key, shape)
    direction = direction / jnp.maximum(_per_sample_l2(direction), _TINY)
    dims = 1
    for size in shape[1:]:
        dims *= size
    radius = jax.random.uniform(radius_key, (shape[0],) + (1,) * (len(shape) - 1)) ** (1.0 / dims)
    return direction * radius * epsilon


def steepest_ascent(gradient: jnp.ndarray, norm: str) -> jnp.ndarray:
    """The unit step that raises a linear objective most within the norm ball: sign(g) for L-inf,
    g / ||g||_2 for L2 (zero where the gradient is zero)."""
    if check_norm(norm) == "linf":
        return jnp.sign(gradient)
    return gradient / jnp.maximum(_per_sample_l2(gradient), _TINY)


def project(images: jnp.ndarray, candidates: jnp.ndarray, epsilon, norm: str) -> jnp.ndarray:
    """The nearest point of the ball around `images`, then clipped to [0, 1].

    Clipping only moves each pixel towards the clean value (which lies in [0, 1]), so the result stays in
    the ball: it is feasible for both constraints.
    """
    delta = candidates - images
    if check_norm(norm) == "linf":
        delta = jnp.clip(delta, -epsilon, epsilon)
    else:
        delta = delta * jnp.minimum(1.0, epsilon / jnp.maximum(_per_sample_l2(delta), _TINY))
    return jnp.clip(images + delta, 0.0, 1.0)


def distance(images: jnp.ndarray, adversarial: jnp.ndarray, norm: str) -> jnp.ndarray:
    """Per-sample distance in the attack's norm, shape (B,)."""
    delta = (adversarial - images).reshape(images.shape[0], -1)
    if check_norm(norm) == "linf":
        return jnp.max(jnp.abs(delta), axis=-1)
    return jnp.sqrt(jnp.sum(jnp.square(delta), axis=-1))
