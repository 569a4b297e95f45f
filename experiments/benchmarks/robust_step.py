"""What the robust GAN's D training costs per step: one plain GAN step against one robust-GAN step (PGD-7
on D inside the step), at a config's size, on synthetic images of that size, after compiling.

    python experiments/benchmarks/robust_step.py                        # configs/fruits.py's size, 10 steps each
    python experiments/benchmarks/robust_step.py --variant=tiny --steps=2

The two steps alternate, so other jobs on a shared machine load both alike; medians over the steps.
Prints a line per model and the ratio; writes nothing.
"""

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="default", help="the configs/fruits.py variant whose size is timed")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--devices", type=int, default=2, help="forced host devices (as the tests and tables use)")
    args = parser.parse_args()
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    sys.path.insert(0, os.path.join(REPO, "configs"))
    import fruits
    import jax
    import numpy as np

    from cfjax import kinds, parallel
    from cfjax.data import synthetic

    mesh = parallel.make_mesh()
    runs = {}
    for model in ("gan", "robust"):
        config = fruits.get_config(args.variant if model == "gan" else f"{args.variant},robust")
        config.data.name = "synthetic"
        kind = kinds.make_kind(config, mesh)
        state = kind.init_state(jax.random.PRNGKey(0))
        data = synthetic.generate_split("train", config.batch_size, image_size=config.data.image_size,
                                        num_classes=config.num_classes)
        batch = parallel.shard_batch({"image": data["image"], "label": data["label"]}, mesh)
        state, metrics = kind.train_step(state, batch)  # compiles
        jax.block_until_ready(metrics)
        runs[config.model] = {"kind": kind, "state": state, "batch": batch, "times": [], "config": config}
    for _ in range(args.steps):
        for run in runs.values():
            start = time.perf_counter()
            run["state"], metrics = run["kind"].train_step(run["state"], run["batch"])
            jax.block_until_ready(metrics)
            run["times"].append(time.perf_counter() - start)
    for name, run in runs.items():
        config = run["config"]
        print(f"{name} ({config.data.image_size} px, batch {config.batch_size}, {jax.device_count()} devices): "
              f"median {np.median(run['times']) * 1e3:.0f} ms, min {min(run['times']) * 1e3:.0f} ms "
              f"over {args.steps} steps")
    ratio = np.median(runs["robust_gan"]["times"]) / np.median(runs["gan"]["times"])
    print(f"robust / plain, medians: {ratio:.2f}")


if __name__ == "__main__":
    main()
