"""One process of the performance benchmark (`performance.py` starts it): the XLA device count is fixed
when JAX starts, so each device count is its own process. Prints one JSON object on its last line.

    python experiments/benchmarks/perf_worker.py --task=speed --devices=2 --sizes=64,128 --repeats=7
    python experiments/benchmarks/perf_worker.py --task=memory --framework=jax --workload=gan --size=64

`speed`: the machine's fp32 matmul peak, then per image size the GAN step and PGD-10 on D, cfjax and the
PyTorch peer (eager, torch.compile, torchattacks) timed alternately (A B A B) on the same batch, with
XLA's FLOP count and memory analysis, the cost of a host sync per step, and the input pipeline.
`memory`: one framework and workload alone, for the process's peak resident memory (and, for cfjax,
the compile time with the persistent cache as the caller left it: cold on an empty cache, warm after).
"""

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PGD_EPSILON, PGD_STEP, PGD_ITERATIONS = 4 / 255, 1 / 255, 10
SWITCHES = {"remat": ("remat=True",), "bfloat16": ("compute_dtype=bfloat16",)}  # --switches: the GAN step with each


def _switch(text: str) -> tuple[str, tuple[str, ...]]:
    """'NAME:FIELD=VALUE[,FIELD=VALUE]' as (NAME, overrides)."""
    name, _, fields = text.rpartition(":")
    if not name or "=" not in fields:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:FIELD=VALUE[,FIELD=VALUE]")
    return name, tuple(fields.split(","))


def make_config(size: int, tiny: bool, overrides: tuple[str, ...] = ()):
    """The default CPU GAN (configs/cracks.py) at `size` px, or its `:tiny` variant for the test suite, with
    FIELD=VALUE overrides (e.g. remat=True, compute_dtype=bfloat16: what those switches cost here)."""
    import ast

    sys.path.insert(0, os.path.join(REPO, "configs"))
    import cracks

    config = cracks.get_config("tiny" if tiny else "default")
    config.data.image_size = size
    for override in overrides:
        field, _, text = override.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word: a string field
        config.update_from_flattened_dict({field: value})
    return config


def fixed_batch(config) -> tuple:
    """The benchmark's batch at the config's size: uniform images (seed 0) and classes in turn. Timings do
    not depend on the values; every workload and framework sees the same ones."""
    import numpy as np

    size = config.data.image_size
    images = np.random.default_rng(0).uniform(size=(config.batch_size, size, size, 3)).astype(np.float32)
    labels = (np.arange(config.batch_size) % config.num_classes).astype(np.int32)
    return images, labels


def timed(call, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def alternate(calls: dict, repeats: int) -> dict:
    """Each call once per round, in turn (A B C A B C ...), after one untimed warm-up round: per name,
    the times, their median, and (against the first name) the median of the round-by-round ratios."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name] += timed(call, 1)
    reference = next(iter(calls))
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                   "ratio_to_" + reference: statistics.median(a / b for a, b in zip(t, times[reference]))}
            for name, t in times.items()}


def matmul_peak(repeats: int, n: int) -> dict:
    """fp32 GFLOP/s of an n x n matmul: the machine's attainable peak, by XLA and (if present) by torch."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    peak = {"n": n, "jax_gflops": 2 * n**3 / min(timed(lambda: matmul(a).block_until_ready(), repeats)) / 1e9}
    torch = _torch()
    if torch is not None:
        t = torch.from_numpy(np.array(a))
        t @ t
        peak["torch_gflops"] = 2 * n**3 / min(timed(lambda: t @ t, repeats)) / 1e9
    peak["gflops"] = max(v for k, v in peak.items() if k.endswith("_gflops"))
    return peak


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def _peer():
    """The PyTorch peer module, or the reason it cannot run here."""
    if _torch() is None:
        return None, "torch is not installed (pip install -e '.[bench]')"
    sys.path.insert(0, HERE)
    import torch_peer

    return torch_peer, None


def program_flops(lowered) -> float:
    """FLOPs of a jitted program over all devices, counted by XLA on the program as lowered (before any
    backend's optimisation). Why not the compiled program's count: on a GPU the convolutions become cuDNN
    custom calls, which XLA's cost analysis counts as zero FLOPs (an H200 run read 12.7 GFLOP for a GAN step
    of 3.2 TFLOP), and the compiled count is per device. The lowered count is the same on every backend."""
    analysis = lowered.cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"])


def lower_gan_step(config, images, labels) -> tuple:
    """cfjax's GAN step lowered on the current mesh: (lowered step, initial state, sharded batch)."""
    import jax

    from cfjax import parallel, steps

    mesh = parallel.make_mesh()
    models = steps.build_gan_models(config)
    state = steps.make_init_fn(models, config, mesh)(jax.random.PRNGKey(0))
    batch = parallel.shard_batch({"image": images, "label": labels}, mesh)
    return steps.make_gan_step(models, config, mesh).lower(state, batch), state, batch


class JaxGan:
    """cfjax's jitted GAN step on the current mesh, with its compile time, FLOPs and memory analysis."""

    def __init__(self, config, images, labels):
        import jax

        lowered, self.state, self.batch = lower_gan_step(config, images, labels)
        self.flops = program_flops(lowered)
        start = time.perf_counter()
        compiled = lowered.compile()
        self.compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()
        self.memory_bytes = {"arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
                             "temporaries": memory.temp_size_in_bytes, "aliased": memory.alias_size_in_bytes}
        self.step = compiled
        # Copies: the step donates (and so deletes) the state it is given.
        self.g_params, self.d_params = jax.tree.map(lambda a: a.copy(), (self.state.g_params, self.state.d_params))

    def __call__(self, sync: bool = True):
        import jax

        self.state, metrics = self.step(self.state, self.batch)
        if sync:
            jax.block_until_ready((self.state, metrics))
        return metrics

    def sync_cost(self, steps: int) -> dict:
        """Seconds per step when the loop reads a scalar after every step (as cfjax's loop reads `finite`)
        against dispatching `steps` steps and waiting once."""
        def loop(read_every_step):
            metrics = None
            for _ in range(steps):
                metrics = self(sync=False)
                if read_every_step:
                    bool(metrics["finite"])
            bool(metrics["finite"])

        result = alternate({"sync_every_step": lambda: loop(True), "sync_at_end": lambda: loop(False)}, 3)
        return {name: r["median_s"] / steps for name, r in result.items()}


def lower_pgd(config, images, labels, d_params, unroll: bool | None = None) -> tuple:
    """cfjax's PGD-10 on D lowered on the current mesh: (jitted attack, lowered attack, its arguments, FLOPs).
    `unroll` as `AttackSpec.unroll` (None: this backend's default); the FLOPs do not depend on it."""
    import jax

    from cfjax import attacks, parallel
    from cfjax.models import make_discriminator

    discriminator = make_discriminator(config)
    mesh = parallel.make_mesh()

    def make(spec):
        return attacks.make_attack(lambda p, x: discriminator.apply({"params": p}, x), spec, mesh)

    spec = attacks.AttackSpec(num_classes=config.num_classes, unroll=unroll)
    attack = make(spec)
    arguments = (d_params, images, labels, jax.random.PRNGKey(1), PGD_EPSILON, PGD_STEP, PGD_ITERATIONS)
    lowered = attack.lower(*arguments)
    # XLA counts a rolled loop's body once (GPU, TPU), so the FLOPs are counted on the unrolled program.
    counted = lowered if spec.unrolled else make(dataclasses.replace(spec, unroll=True)).lower(*arguments)
    return attack, lowered, arguments, program_flops(counted)


def jax_pgd(config, images, labels, d_params):
    """A call running the compiled PGD-10, with its compile time and FLOPs as attributes."""
    attack, lowered, arguments, flops = lower_pgd(config, images, labels, d_params)
    start = time.perf_counter()
    compiled = lowered.compile()

    def call():
        attack(*arguments).adversarial.block_until_ready()

    call.compile_s = time.perf_counter() - start
    call.compiled = compiled
    call.flops = flops
    return call


def torch_calls(peer, config, images, labels, jax_gan: JaxGan, with_compile: bool) -> tuple[dict, dict, dict]:
    """GAN-step and PGD calls of the PyTorch peer (from cfjax's initial weights), and what was checked."""
    import jax
    import numpy as np
    import torch

    x, y = peer.to_torch(np.asarray(images)), torch.from_numpy(np.asarray(labels)).long()
    eager = peer.build_gan(config)
    counts = eager.param_counts()
    jax_counts = tuple(sum(int(np.prod(a.shape)) for a in jax.tree.leaves(p)) for p in (jax_gan.g_params,
                                                                                          jax_gan.d_params))
    if tuple(counts) != jax_counts:
        raise AssertionError(f"parameter counts differ: torch {counts}, cfjax {jax_counts}")
    eager.load_flax(jax.device_get(jax_gan.g_params), jax.device_get(jax_gan.d_params))
    gan = {"torch_eager": lambda: eager.step(x, y)}
    pgd = {"torch_eager": lambda: peer.pgd(lambda z: eager.discriminator(z)[:, :config.num_classes], x, y,
                                           epsilon=PGD_EPSILON, step_size=PGD_STEP, num_steps=PGD_ITERATIONS),
           "torchattacks": lambda: peer.torchattacks_pgd(eager.discriminator, config.num_classes, x, y,
                                                         epsilon=PGD_EPSILON, step_size=PGD_STEP,
                                                         num_steps=PGD_ITERATIONS)}
    notes = {"parameters_g_d": list(counts)}
    if not with_compile:
        return gan, pgd, notes
    try:
        compiled = peer.build_gan(config, compile=True)
        compiled.load_flax(jax.device_get(jax_gan.g_params), jax.device_get(jax_gan.d_params))
        start = time.perf_counter()
        compiled.step(x, y)
        notes["torch_compile_first_call_s"] = time.perf_counter() - start
        gan["torch_compile"] = lambda: compiled.step(x, y)
        d_compiled = torch.compile(eager.discriminator, dynamic=False)
        pgd["torch_compile"] = lambda: peer.pgd(lambda z: d_compiled(z)[:, :config.num_classes], x, y,
                                                epsilon=PGD_EPSILON, step_size=PGD_STEP, num_steps=PGD_ITERATIONS)
    except Exception as error:  # noqa: BLE001 - a peer variant that fails is reported, not fatal
        notes["torch_compile_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return gan, pgd, notes


def loader_images_per_second(config, count: int) -> float:
    """Images/s from the input pipeline into sharded device arrays (the embedded dataset)."""
    from cfjax import parallel
    from cfjax.data import pipeline

    batches = pipeline.train_batches(pipeline.training_source(config), config, parallel.make_mesh())
    for _ in range(3):
        next(batches)["image"].block_until_ready()  # warm the worker threads and the prefetch queue
    seconds = sum(timed(lambda: next(batches)["image"].block_until_ready(), count))
    return count * config.batch_size / seconds


def speed(args) -> dict:
    import jax

    peer, peer_missing = _peer() if args.peer else (None, "not run in this process")
    out = {"devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
           "backend": jax.default_backend(), "peak": matmul_peak(args.repeats, 512 if args.tiny else 2048),
           "peer": peer_missing or "torch " + _torch().__version__, "peer_ran": peer is not None,
           "malloc": args.malloc, "overrides": args.override, "sizes": {}}
    for size in args.sizes:
        config = make_config(size, args.tiny, tuple(args.override))
        images, labels = fixed_batch(config)
        gan = JaxGan(config, images, labels)
        gan_calls = {"cfjax": gan}
        pgd_calls = {"cfjax": jax_pgd(config, gan.batch["image"], gan.batch["label"], gan.d_params)}
        row = {"batch": config.batch_size, "gan_step_flops": gan.flops, "pgd10_flops": pgd_calls["cfjax"].flops,
               "compile_s": gan.compile_s,
               "xla_memory_bytes": gan.memory_bytes}
        if peer is not None:
            torch_gan, torch_pgd, row["peer_checks"] = torch_calls(peer, config, images, labels, gan,
                                                                   args.torch_compile)
            gan_calls.update(torch_gan)
            pgd_calls.update(torch_pgd)
        row["gan_step"] = alternate(gan_calls, args.repeats)
        if args.switches or args.switch:  # what each switch costs on this machine, alternating, default first
            row["switches"] = alternate({"default": gan, **{
                name: JaxGan(make_config(size, args.tiny, (*args.override, *overrides)), images, labels)
                for name, overrides in (dict(args.switch) or SWITCHES).items()}}, args.repeats)
        row["pgd10"] = alternate(pgd_calls, args.repeats)
        row["sync_cost_s_per_step"] = gan.sync_cost(4 if args.tiny else 8)
        out["sizes"][str(size)] = row
        print(f"{size} px: GAN step {row['gan_step']['cfjax']['median_s']:.3f} s, "
              f"PGD-10 {row['pgd10']['cfjax']['median_s']:.3f} s", file=sys.stderr, flush=True)
    out["loader_images_per_s"] = loader_images_per_second(make_config(args.sizes[0], args.tiny),
                                                          8 if args.tiny else 40)
    return out


def memory(args) -> dict:
    """Peak resident memory of the process for one framework and workload (a few calls after building)."""

    config = make_config(args.size, args.tiny)
    images, labels = fixed_batch(config)
    result = {"framework": args.framework, "workload": args.workload, "size": args.size}
    if args.framework == "jax" and args.workload == "gan":
        call = JaxGan(config, images, labels)
        result["compile_s"] = call.compile_s
    elif args.framework == "jax":  # D's parameters alone, as the torch row holds D alone
        import jax

        from cfjax import parallel
        from cfjax.models import make_discriminator

        d_params = jax.jit(make_discriminator(config).init)(jax.random.PRNGKey(0), images[:1])["params"]
        batch = parallel.shard_batch({"image": images, "label": labels}, parallel.make_mesh())
        call = jax_pgd(config, batch["image"], batch["label"], d_params)
        result["compile_s"] = call.compile_s
    else:
        peer, missing = _peer()
        if peer is None:
            return {**result, "skipped": missing}
        import torch

        gan = peer.build_gan(config)
        x, y = peer.to_torch(images), torch.from_numpy(labels).long()
        call = (lambda: gan.step(x, y)) if args.workload == "gan" else (
            lambda: peer.pgd(lambda z: gan.discriminator(z)[:, :config.num_classes], x, y, epsilon=PGD_EPSILON,
                             step_size=PGD_STEP, num_steps=PGD_ITERATIONS))
    result["rss_before_first_call_mb"] = _rss_mb()
    for _ in range(3):
        call()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("speed", "memory"), required=True)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[64])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--framework", choices=("jax", "torch"), default="jax")
    parser.add_argument("--workload", choices=("gan", "pgd"), default="gan")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--no-torch-compile", dest="torch_compile", action="store_false")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="time cfjax alone")
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                        help="a config field of the timed GAN (remat=True, compute_dtype=bfloat16; with --no-peer)")
    parser.add_argument("--switches", action="store_true",
                        help="also time the GAN step with each of SWITCHES on, alternating with the default")
    parser.add_argument("--switch", action="append", default=[], type=_switch, metavar="NAME:FIELD=VALUE[,...]",
                        help="time this variant instead of SWITCHES, alternating with the default (repeatable; "
                             "e.g. 'D without norm:discriminator.norm=none')")
    parser.add_argument("--malloc", choices=("tuned", "default", "one_arena"), default="tuned",
                        help="glibc's malloc thresholds as the command line sets them (cfjax.host_memory; both "
                             "frameworks of the process share them), glibc's defaults, or the thresholds and "
                             "one arena for all threads (tried and not kept: docs/performance.md)")
    args = parser.parse_args()
    if args.malloc != "default":
        from cfjax import host_memory

        host_memory.keep_freed_memory()
        if args.malloc == "one_arena":
            import ctypes

            assert ctypes.CDLL(None).mallopt(-8, 1) == 1  # M_ARENA_MAX, before any thread mallocs
    # Forced host devices (a CPU's cores as devices); a GPU or TPU keeps its own devices.
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={args.devices}"])
    import jax

    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    print(json.dumps(speed(args) if args.task == "speed" else memory(args)))


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
