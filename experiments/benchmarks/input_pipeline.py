"""Input pipeline throughput next to the GAN step's consumption, at the default CPU config.

    python experiments/benchmarks/input_pipeline.py [--datasets=synthetic,crack_segmentation/sut] [--steps=60]

For each dataset it measures (1) the loader alone: images/s from grain into sharded device arrays,
and (2) the training loop: GAN steps fed by the loader against the same steps fed one batch already
on the devices, so "the step never waits on data" is a measured ratio, not a claim. Prepared
datasets are skipped (and said so) when they are not in the TFDS data dir. Writes JSON and a
markdown table to experiments/benchmarks/results/.
"""

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _force_host_devices(count: int) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def _config(dataset: str):
    sys.path.insert(0, os.path.join(REPO, "configs"))
    import cracks
    import fruits

    config = (fruits if dataset.startswith("fruit_defects") else cracks).get_config()
    config.data.name = dataset
    return config


def _images_per_second(batches, count: int, batch_size: int) -> float:
    for _ in range(3):
        next(batches)["image"].block_until_ready()  # warm the worker threads and the prefetch queue
    start = time.perf_counter()
    for _ in range(count):
        next(batches)["image"].block_until_ready()
    return count * batch_size / (time.perf_counter() - start)


def _loop_seconds(step, state, next_batch, count: int):
    state, metrics = step(state, next_batch())
    jax_block(metrics)
    start = time.perf_counter()
    for _ in range(count):
        state, metrics = step(state, next_batch())
        jax_block(metrics)  # training syncs on the finite flag every step: so does this loop
    return (time.perf_counter() - start) / count, state


def jax_block(metrics):
    bool(metrics["finite"])


def measure(dataset: str, steps: int) -> dict | None:
    import jax

    from cfjax import parallel
    from cfjax import steps as steps_lib
    from cfjax.data import pipeline
    from cfjax.errors import DataError

    config = _config(dataset)
    mesh = parallel.make_mesh()
    try:
        source = pipeline.training_source(config)
    except DataError as error:
        print(f"skipping {dataset}: {str(error).splitlines()[0]}")
        return None
    loader = _images_per_second(pipeline.train_batches(source, config, mesh), 4 * steps, config.batch_size)

    models = steps_lib.build_gan_models(config)
    state = steps_lib.make_init_fn(models, config, mesh)(jax.random.PRNGKey(0))
    step = steps_lib.make_gan_step(models, config, mesh)
    fixed = next(pipeline.train_batches(source, config, mesh))
    fixed_time, state = _loop_seconds(step, state, lambda: jax.tree.map(lambda a: a.copy(), fixed), steps)
    batches = pipeline.train_batches(source, config, mesh)
    fed_time, _ = _loop_seconds(step, state, lambda: next(batches), steps)
    return {
        "dataset": dataset,
        "examples": len(source),
        "batch_size": config.batch_size,
        "image_size": config.data.image_size,
        "loader_images_per_s": round(loader, 1),
        "step_images_per_s_fixed_batch": round(config.batch_size / fixed_time, 1),
        "step_images_per_s_with_loader": round(config.batch_size / fed_time, 1),
        "loader_over_step_ratio": round(loader * fixed_time / config.batch_size, 1),
        "loop_slowdown_with_loader": round(fed_time / fixed_time, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,crack_segmentation/sut,fruit_defects/apples")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--devices", type=int, default=2, help="forced host devices (CPU)")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "benchmarks", "results"))
    args = parser.parse_args()
    _force_host_devices(args.devices)
    import jax

    rows = [r for r in (measure(d, args.steps) for d in args.datasets.split(",")) if r]
    os.makedirs(args.out, exist_ok=True)
    meta = {"devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "cpus": os.cpu_count(),
            "jax": jax.__version__, "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])}
    with open(os.path.join(args.out, "input_pipeline.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    lines = [f"Input pipeline vs GAN step ({meta['devices']}, {meta['cpus']} CPUs; `{meta['command']}`)", "",
             "| dataset | loader img/s | step img/s (batch on device) | step img/s (fed by loader) | "
             "loader / step | loop slowdown |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['loader_images_per_s']} | {r['step_images_per_s_fixed_batch']} | "
                     f"{r['step_images_per_s_with_loader']} | {r['loader_over_step_ratio']}x | "
                     f"{r['loop_slowdown_with_loader']} |")
    table = "\n".join(lines)
    with open(os.path.join(args.out, "input_pipeline.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
