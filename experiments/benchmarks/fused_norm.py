"""Group normalisation + swish as one `jax.custom_vjp` with a hand-written backward pass, against XLA's
autodiff of the same function (cfjax.models.layers: GroupNorm, then swish), forward + backward alone on one
device, on the GAN step's normalisation shapes. Tried for issue 21 ("statistics and normalisation in one
fusion, the affine and swish folded in"); not used by cfjax: see docs/performance.md.

    python experiments/benchmarks/fused_norm.py [--repeats=30]

Writes experiments/benchmarks/results/fused_norm.{json,md}.
"""

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# (batch per device, H, W, channels), groups: G's and D's normalised activations at 64 px, batch 16 on 2 devices
SHAPES = (((8, 64, 64, 16), 8), ((8, 32, 32, 34), 2), ((8, 32, 32, 32), 8), ((8, 16, 16, 64), 8))


def _statistics(x, groups: int):
    """Per (example, group): mean and variance over (H, W, the group's channels), in one pass over x."""
    batch, axes = x.shape[0], tuple(range(1, x.ndim - 1))
    count = (x.shape[-1] // groups) * math.prod(x.shape[1:-1])
    mean = x.sum(axes).reshape(batch, groups, -1).sum(-1) / count
    square = (x * x).sum(axes).reshape(batch, groups, -1).sum(-1) / count
    return mean, (square - mean * mean).clip(0.0)


def _per_channel(values, x):
    """(B, groups) -> broadcastable against x (B, ..., C)."""
    per_channel = values.repeat(x.shape[-1] // values.shape[-1], axis=-1)
    return per_channel.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],))


def reference(x, scale, bias, groups: int, epsilon: float = 1e-6):
    """swish(GroupNorm(x)) as cfjax computes it; its gradient is XLA's autodiff."""
    import jax

    mean, variance = _statistics(x, groups)
    multiplier = _per_channel(jax.lax.rsqrt(variance + epsilon), x) * scale
    return jax.nn.swish(x * multiplier + (bias - _per_channel(mean, x) * multiplier))


@functools.cache
def fused():
    """The same function with a hand-written backward: two passes over the activations forward (statistics,
    then normalise + swish) and two backward (the per-channel sums of dz and dz * x, then dx)."""
    import jax

    def forward(x, scale, bias, groups, epsilon):
        mean, variance = _statistics(x, groups)
        rstd = jax.lax.rsqrt(variance + epsilon)
        multiplier = _per_channel(rstd, x) * scale
        z = x * multiplier + (bias - _per_channel(mean, x) * multiplier)
        return z * jax.nn.sigmoid(z), (x, scale, bias, mean, rstd)

    def backward(groups, epsilon, residuals, grad):
        x, scale, bias, mean, rstd = residuals
        axes = tuple(range(1, x.ndim - 1))
        count = (x.shape[-1] // groups) * math.prod(x.shape[1:-1])
        multiplier = _per_channel(rstd, x) * scale
        z = x * multiplier + (bias - _per_channel(mean, x) * multiplier)
        sigmoid = jax.nn.sigmoid(z)
        dz = grad * sigmoid * (1 + z * (1 - sigmoid))
        sum_dz, sum_dz_x = dz.sum(axes), (dz * x).sum(axes)  # (B, C)
        mean_c, rstd_c = (v.repeat(x.shape[-1] // groups, axis=-1) for v in (mean, rstd))
        sum_dz_xhat = rstd_c * (sum_dz_x - mean_c * sum_dz)
        by_group = lambda v: v.reshape(x.shape[0], groups, -1).sum(-1) / count  # noqa: E731
        a, b = by_group(scale * sum_dz), by_group(scale * sum_dz_xhat)  # group means of g*xhat and g*xhat*xhat
        x_coefficient = -_per_channel(rstd * rstd * b, x)
        constant = _per_channel(rstd * (mean * rstd * b - a), x)
        return dz * multiplier + x * x_coefficient + constant, sum_dz_xhat.sum(0), sum_dz.sum(0)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
    def group_norm_swish(x, scale, bias, groups, epsilon=1e-6):
        return forward(x, scale, bias, groups, epsilon)[0]

    group_norm_swish.defvjp(forward, backward)
    return group_norm_swish


def gradient_fn(norm, shape, groups):
    """jit(grad) of a weighted sum of norm(x) with respect to x, scale and bias, and its arguments."""
    import jax

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(keys[0], shape) * 2 + 0.5
    scale, bias = jax.random.normal(keys[1], shape[-1:]) + 1, jax.random.normal(keys[2], shape[-1:])
    weights = jax.random.normal(keys[3], shape)
    loss = lambda x, scale, bias: (norm(x, scale, bias, groups) * weights).sum()  # noqa: E731
    return jax.jit(jax.grad(loss, (0, 1, 2))), (x, scale, bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=1".strip()
    import jax

    rows = []
    for shape, groups in SHAPES:
        times = {}
        for name, norm in (("autodiff", reference), ("fused", fused())):
            fn, arguments = gradient_fn(norm, shape, groups)
            jax.block_until_ready(fn(*arguments))
            times[name] = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                jax.block_until_ready(fn(*arguments))
                times[name].append(time.perf_counter() - start)
        medians = {f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()}
        rows.append({"shape": shape, "groups": groups, **medians})
        print(rows[-1], file=sys.stderr, flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fused_norm.json"), "w") as f:
        json.dump({"command": " ".join(["python", *sys.argv]), "rows": rows}, f, indent=2)
    lines = [f"`python experiments/benchmarks/fused_norm.py --repeats={args.repeats}` (one device, {os.cpu_count()} "
             "CPUs): GroupNorm + swish, forward and backward, median ms", "",
             "| shape (one device) | groups | XLA autodiff | custom_vjp | custom_vjp / autodiff |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['groups']} | {r['autodiff_ms']:.3f} | {r['fused_ms']:.3f} | "
              f"{r['fused_ms'] / r['autodiff_ms']:.2f} |" for r in rows]
    with open(os.path.join(args.out, "fused_norm.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
