"""PGD-10 throughput (images/s) on the default models: D, G's classification head and the plain
classifier at the default CPU config (64 px), through `cfjax.attacks.make_attack` over the device mesh.

    python experiments/benchmarks/pgd.py [--config=fruits] [--batch=64] [--repeats=5] [--devices=N]

Parameters are freshly initialised (throughput does not depend on their values). Each figure is the
median of `repeats` timed calls after one compiling call; the compile time is reported apart. Writes
experiments/benchmarks/results/pgd.{json,md}.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="fruits", choices=("fruits", "cracks"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, default=None,
                        help="forced XLA host devices on a CPU (default: as the CLI, up to one per core dividing "
                             "the batch)")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "benchmarks", "results"))
    args = parser.parse_args()
    if args.devices:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    else:
        from cfjax.cli.startup import cpu_defaults

        cpu_defaults(args.batch)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from cfjax import attacks, parallel
    from cfjax.models import make_discriminator, make_generator, make_plain_classifier

    sys.path[:0] = [os.path.join(REPO, "configs"), os.path.dirname(os.path.abspath(__file__))]
    from perf_worker import matmul_peak

    config = __import__(args.config).get_config()
    size, k = config.data.image_size, config.num_classes
    mesh = parallel.make_mesh()
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(args.batch, size, size, 3)), jnp.float32)
    labels = jnp.asarray(np.arange(args.batch) % k, jnp.int32)
    zeros = lambda x: jnp.zeros(x.shape[:1], jnp.int32)
    generator, discriminator, classifier = make_generator(config), make_discriminator(config), \
        make_plain_classifier(config)
    models = {
        "D": (discriminator, lambda p, x: discriminator.apply({"params": p}, x),
              discriminator.init(jax.random.PRNGKey(0), images[:1])["params"]),
        "G_head": (generator, lambda p, x: generator.apply({"params": p}, x, zeros(x))[1],
                   generator.init(jax.random.PRNGKey(0), images[:1], labels[:1])["params"]),
        "classifier": (classifier, lambda p, x: classifier.apply({"params": p}, x),
                       classifier.init(jax.random.PRNGKey(0), images[:1])["params"]),
    }
    rows = {}
    for name, (_, apply_fn, params) in models.items():
        attack = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=k), mesh)
        call = lambda attack=attack, params=params: attack(
            params, images, labels, jax.random.PRNGKey(1), 4 / 255, 1 / 255, 10).adversarial.block_until_ready()
        start = time.perf_counter()
        call()
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows[name] = {"images_per_s": args.batch / median, "median_s": median, "min_s": min(times),
                      "max_s": max(times), "first_call_s": compile_s,
                      "params": sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))}
        print(f"{name}: {args.batch / median:.1f} images/s (PGD-10, batch {args.batch}, median of {args.repeats})",
              flush=True)
    result = {"config": args.config, "image_size": size, "batch": args.batch, "iterations": 10,
              "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "backend": jax.default_backend(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "jax": jax.__version__, "models": rows,
              "matmul_peak": matmul_peak(args.repeats, 2048)}  # this host's speed today, beside the figures
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "pgd.json"), "w") as f:
        json.dump(result, f, indent=2)
    peak = result["matmul_peak"]
    lines = [f"PGD-10 on `configs/{args.config}.py` models, {size} px, batch {args.batch}, {result['devices']} "
             f"(host fp32 matmul peak in the same process: {peak['gflops']:.0f} GFLOP/s, "
             f"XLA {peak['jax_gflops']:.0f}):",
             "",
             "| model | parameters | images/s | median s per batch | first call (compile) s |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {r['params']:,} | {r['images_per_s']:.1f} | {r['median_s']:.3f} | {r['first_call_s']:.1f} |"
              for n, r in rows.items()]
    with open(os.path.join(args.out, "pgd.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
