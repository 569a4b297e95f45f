"""Input gradients inside loops on a CPU: flax's plain `nn.Conv` against `cfjax.models.conv` (the layers' `Conv`),
on the workloads that take them: PGD-10, APGD-CE and FAB-T of the AutoAttack-style ensemble (100 iterations
each, one batch), one step of the robust GAN (PGD-7 on D inside the step), and one input gradient outside
any loop (where both should cost the same).

    python experiments/benchmarks/loop_gradients.py [--config=fruits] [--batch=64] [--repeats=3] [--devices=2]
    python experiments/benchmarks/loop_gradients.py --variant=tiny --batch=4 --repeats=1   # in a minute

Each workload is compiled twice, once with each convolution (the plain one traced with `Conv` swapped back
to `nn.Conv`), and the two are timed in turn (A B A B) after a warm-up; parameters are freshly initialised
(the time does not depend on their values). Run it with nothing else on the cores. Writes
experiments/benchmarks/results/loop_gradients.{json,md}.
"""

import argparse
import contextlib
import json
import os
import platform
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def plain_flax_conv():
    """Trace models with flax's `nn.Conv`, as cfjax did before `cfjax.models.conv`."""
    import flax.linen as nn

    from cfjax.models import classifier, generator, layers

    saved = [(module, module.Conv) for module in (classifier, generator, layers)]
    for module, _ in saved:
        module.Conv = nn.Conv
    try:
        yield
    finally:
        for module, conv in saved:
            module.Conv = conv


def workloads(config, robust, batch: int) -> dict:
    """{name: a function that builds (traces and compiles) the workload and returns a timed call}; `robust` is
    the robust GAN's config of the same task."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from cfjax import attacks, kinds, parallel
    from cfjax.data import synthetic
    from cfjax.models import make_plain_classifier

    mesh = parallel.make_mesh()
    size, k = config.data.image_size, config.num_classes
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, size, size, 3)), jnp.float32)
    labels = jnp.asarray(np.arange(batch) % k, jnp.int32)

    def classifier():
        model = make_plain_classifier(config)
        return (lambda p, x: model.apply({"params": p}, x)), model.init(jax.random.PRNGKey(0), images[:1])["params"]

    def gradient():
        apply_fn, params = classifier()
        grad = jax.jit(jax.grad(lambda x: jnp.sum(apply_fn(params, x)[:, 0])))
        return lambda: grad(images).block_until_ready()

    def pgd10():
        apply_fn, params = classifier()
        attack = attacks.make_attack(apply_fn, attacks.AttackSpec(num_classes=k), mesh)
        return lambda: attack(params, images, labels, jax.random.PRNGKey(1), 4 / 255, 1 / 255,
                              10).adversarial.block_until_ready()

    def member(name):
        def build():
            apply_fn, params = classifier()
            attack = attacks.make_ensemble(apply_fn, attacks.EnsembleSpec(num_classes=k, members=(name,)), mesh)
            return lambda: attack(params, images, labels, jax.random.PRNGKey(1), 4 / 255).success.block_until_ready()
        return build

    def robust_step():
        robust.data.name = "synthetic"
        kind = kinds.make_kind(robust, mesh)
        state = {"state": kind.init_state(jax.random.PRNGKey(0))}
        data = synthetic.generate_split("train", robust.batch_size, image_size=size, num_classes=k)
        step_batch = parallel.shard_batch({"image": data["image"], "label": data["label"]}, mesh)

        def call():
            state["state"], metrics = kind.train_step(state["state"], step_batch)
            jax.block_until_ready(metrics)
        return call

    return {"input gradient, no loop": gradient, "PGD-10": pgd10, "APGD-CE, 100 iterations": member("apgd-ce"),
            "FAB-T, 100 iterations": member("fab-t"), "robust GAN step (PGD-7 on D)": robust_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="fruits", help="a configs/*.py name: its default model sizes")
    parser.add_argument("--variant", default="", help="a variant of the config (e.g. tiny); its robust GAN too")
    parser.add_argument("--batch", type=int, default=64, help="images per attack call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", type=int, default=2, help="forced host devices (as the CLI uses on 2 cores)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    sys.path[:0] = [os.path.join(REPO, "configs"), HERE]
    import jax
    from perf_worker import alternate

    task = __import__(args.config)
    rows = {}
    robust = f"{args.variant},robust" if args.variant else "robust"
    for name, build in workloads(task.get_config(args.variant), task.get_config(robust), args.batch).items():
        calls = {"cfjax Conv": build()}
        with plain_flax_conv():
            calls["flax nn.Conv"] = build()
            calls["flax nn.Conv"]()  # traced and compiled while the plain convolution is in place
        medians = alternate(calls, args.repeats)
        rows[name] = {variant: {"median_s": m["median_s"], "min_s": m["min_s"], "max_s": m["max_s"]}
                      for variant, m in medians.items()}
        rows[name]["speedup"] = medians["flax nn.Conv"]["median_s"] / medians["cfjax Conv"]["median_s"]
        print(f"{name}: flax nn.Conv {medians['flax nn.Conv']['median_s']:.2f} s, cfjax Conv "
              f"{medians['cfjax Conv']['median_s']:.2f} s ({rows[name]['speedup']:.1f}x)", flush=True)
    result = {"config": args.config, "variant": args.variant, "batch": args.batch, "repeats": args.repeats,
              "rows": rows, "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "jax": jax.__version__}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "loop_gradients.json"), "w") as f:
        json.dump(result, f, indent=2)
    variant = f" --variant={args.variant}" if args.variant else ""
    lines = [f"`python experiments/benchmarks/loop_gradients.py --config={args.config}{variant}`: {args.batch} images "
             f"per attack call (the robust step: the config's batch), {result['devices']}, {result['machine']}, jax "
             f"{jax.__version__}; medians of {args.repeats} alternating calls, seconds.", "",
             "| workload | flax nn.Conv | cfjax Conv | speed-up |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['flax nn.Conv']['median_s']:.3f} | {r['cfjax Conv']['median_s']:.3f} | "
              f"{r['speedup']:.1f}x |" for name, r in rows.items()]
    with open(os.path.join(args.out, "loop_gradients.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
