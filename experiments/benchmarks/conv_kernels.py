"""Where the GAN step's time goes on a CPU: its 3x3 convolutions and GroupNorms alone, XLA against
PyTorch's kernels (oneDNN), forward and forward+backward, alternating, at the default config's shapes.

    python experiments/benchmarks/conv_kernels.py [--batch=16] [--repeats=15]

One XLA device (a kernel's speed, not data parallelism). Writes
experiments/benchmarks/results/conv_kernels.{json,md}.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# (resolution, input channels, output channels) of the default G and D at 64 px (configs/cracks.py):
# the stems after space-to-depth, residual blocks, down/up-sampling convolutions and G's skip merges.
CONV_SHAPES = ((32, 12, 16), (32, 16, 16), (32, 48, 16), (16, 64, 32), (16, 32, 32), (8, 128, 64), (8, 64, 64))
NORM_SHAPES = ((32, 16), (16, 32), (8, 64))


def _pair(jax_call, torch_call, repeats: int) -> tuple[float, float]:
    """Medians of the two calls timed in turn (A B A B), as the performance benchmark times them."""
    from perf_worker import alternate

    medians = alternate({"xla": jax_call, "torch": torch_call}, repeats)
    return medians["xla"]["median_s"], medians["torch"]["median_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=1".strip()
    import flax.linen as nn
    import jax
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    rows = []
    for size, cin, cout in CONV_SHAPES:
        x = rng.uniform(size=(args.batch, size, size, cin)).astype(np.float32)
        x_device = jax.device_put(x)  # timed calls must not include a host-to-device copy
        conv = nn.Conv(cout, (3, 3))
        params = conv.init(jax.random.PRNGKey(0), x)
        forward = jax.jit(conv.apply)
        both = jax.jit(jax.grad(lambda p, x: (conv.apply(p, x) ** 2).sum(), argnums=(0, 1)))
        layer = torch.nn.Conv2d(cin, cout, 3, padding=1).to(memory_format=torch.channels_last)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last).requires_grad_()

        def torch_forward():
            with torch.no_grad():
                layer(xt)

        def torch_both():
            (layer(xt) ** 2).sum().backward()

        flops = 2 * args.batch * size * size * cin * cout * 9
        jf, tf = _pair(lambda: jax.block_until_ready(forward(params, x_device)), torch_forward, args.repeats)
        jb, tb = _pair(lambda: jax.block_until_ready(both(params, x_device)), torch_both, args.repeats)
        rows.append({"op": f"conv3x3 {size}x{size} {cin}->{cout}", "flops_forward": flops,
                     "xla_forward_gflops": flops / jf / 1e9, "torch_forward_gflops": flops / tf / 1e9,
                     "xla_fwd_bwd_gflops": 3 * flops / jb / 1e9, "torch_fwd_bwd_gflops": 3 * flops / tb / 1e9})
    for size, channels in NORM_SHAPES:
        x = rng.uniform(size=(args.batch, size, size, channels)).astype(np.float32)
        x_device = jax.device_put(x)
        norm = nn.GroupNorm(num_groups=8)
        params = norm.init(jax.random.PRNGKey(0), x)
        both = jax.jit(jax.grad(lambda p, x: (nn.swish(norm.apply(p, x)) ** 2).sum(), argnums=(0, 1)))
        layer = torch.nn.GroupNorm(8, channels)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last).requires_grad_()
        jb, tb = _pair(lambda: jax.block_until_ready(both(params, x_device)),
                       lambda: (torch.nn.functional.silu(layer(xt)) ** 2).sum().backward(), args.repeats)
        rows.append({"op": f"groupnorm+swish {size}x{size}x{channels}", "xla_fwd_bwd_ms": jb * 1e3,
                     "torch_fwd_bwd_ms": tb * 1e3})
    result = {"batch": args.batch, "xla_flags": os.environ["XLA_FLAGS"], "cpus": os.cpu_count(),
              "jax": jax.__version__, "torch": torch.__version__,
              "command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]), "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "conv_kernels.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"`{result['command']}` (XLA_FLAGS={result['xla_flags']}): batch {args.batch}, {os.cpu_count()} CPUs, "
             "one XLA device, medians of "
             f"{args.repeats} alternating calls.", "",
             "| op | XLA forward | torch forward | XLA fwd+bwd | torch fwd+bwd |", "|---|---|---|---|---|"]
    for row in rows:
        if "flops_forward" in row:
            lines.append(f"| {row['op']} | {row['xla_forward_gflops']:.0f} GFLOP/s | "
                         f"{row['torch_forward_gflops']:.0f} GFLOP/s | {row['xla_fwd_bwd_gflops']:.0f} GFLOP/s | "
                         f"{row['torch_fwd_bwd_gflops']:.0f} GFLOP/s |")
        else:
            lines.append(f"| {row['op']} | | | {row['xla_fwd_bwd_ms']:.2f} ms | {row['torch_fwd_bwd_ms']:.2f} ms |")
    with open(os.path.join(args.out, "conv_kernels.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
