"""The `:accelerator` configs on whatever devices JAX finds (a GPU, a TPU slice): GAN step and PGD-10 in
fp32 and bf16 with the batch scaled to the devices, MFU, compile time, memory, and a short training run.

    python experiments/benchmarks/accelerator.py                    # a GPU or TPU; about 8 minutes
    python experiments/benchmarks/accelerator.py --tiny --train_steps=4 --repeats=1   # CPU smoke test
    python experiments/benchmarks/accelerator.py --recount=RESULT.json --out=DIR      # FLOPs counted again here

Per compute dtype: the GAN step's and PGD-10's median time after one compiling call, images/s, FLOPs
(XLA's cost analysis of the lowered program), MFU against the best matmul rate measured in the same
process and dtype and, where the device is in `SPEC_PEAK_TFLOPS`, against its data-sheet peak; the
compile time and XLA's memory analysis, and the device's peak memory where the backend reports it.
Then `--train_steps` steps of `train_and_evaluate` on the embedded data (fp32 unless `--train_dtype`),
whose logged losses show the compiled program also learns. Writes
experiments/benchmarks/results/accelerator.{json,md} (`--out` elsewhere), after each part, so a lease
that ends mid-run keeps what finished. Why a separate script: performance.py compares against PyTorch
on this CPU; this one answers "what does a Colab TPU or a cloud GPU give", for docs/performance.md.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "configs"))

# Dense data-sheet peaks per device (one JAX device), TFLOP/s: {dtype: peak}. GPUs: NVIDIA's SXM figures
# without sparsity ("float32" is what XLA runs an fp32 matmul at by default, TF32 on Ampere and later).
# TPUs: per chip as JAX sees it (v2/v3 show each of a chip's two cores as a device: half the chip).
SPEC_PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float32": 494.0},
    "H100": {"bfloat16": 989.0, "float32": 494.0},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
    "L4": {"bfloat16": 121.0, "float32": 60.0},
    "T4": {"bfloat16": 65.0, "float32": 8.1},  # no bf16 units: fp16's rate, which bf16 does not reach
    "TPU v2": {"bfloat16": 22.5},
    "TPU v3": {"bfloat16": 61.5},
    "TPU v4": {"bfloat16": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0},
    "TPU v5p": {"bfloat16": 459.0},
    "TPU v6 lite": {"bfloat16": 918.0},
}


MAX_TRAIN_IMAGES = 4096
FLOPS_COUNTED = "XLA's cost analysis of each program as lowered (convolutions included on every backend)"


def spec_peak(device_kind: str, dtype: str) -> float | None:
    """The data-sheet peak (TFLOP/s) of the device whose kind names a `SPEC_PEAK_TFLOPS` entry, or None."""
    for name in sorted(SPEC_PEAK_TFLOPS, key=len, reverse=True):  # "TPU v5p" before "TPU v5"
        if name.lower() in device_kind.lower():
            return SPEC_PEAK_TFLOPS[name].get(dtype)
    return None


def benchmark_config(variant: str, dtype: str, per_device_batch: int, tiny: bool):
    """The cracks `:accelerator` config (or `:tiny`) in `dtype`, its batches scaled to the devices."""
    import cracks

    from cfjax import colab

    config = cracks.get_config("tiny" if tiny else variant)
    config.compute_dtype = dtype
    return colab.scale_batch(config, per_device_batch)


def matmul_rate(dtype: str, n: int, repeats: int) -> float:
    """TFLOP/s of the best of `repeats` n x n matmuls in `dtype` on every device at once (one per device)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from cfjax import parallel

    mesh = parallel.make_mesh()
    a = np.random.default_rng(0).standard_normal((jax.device_count() * n, n)).astype(np.float32)
    a = jax.device_put(jnp.asarray(a, dtype), parallel.batch_sharding(mesh))
    matmul = jax.jit(lambda a: jnp.einsum("bij,bjk->bik", a.reshape(-1, n, n), a.reshape(-1, n, n)))
    matmul(a).block_until_ready()
    best = min(_times(lambda: matmul(a).block_until_ready(), repeats))
    return 2 * n**3 * jax.device_count() / best / 1e12


def _times(call, repeats: int) -> list[float]:
    import perf_worker

    return perf_worker.timed(call, repeats)


def _summary(times: list[float], batch: int, flops: float, rate: float, peak: float | None) -> dict:
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "max_s": max(times), "images_per_s": batch / median,
            **_rates(median, flops, rate, peak)}


def _rates(median_s: float, flops: float, rate: float, peak: float | None) -> dict:
    achieved = flops / median_s / 1e12
    return {"tflops": achieved, "mfu_measured_peak": achieved / rate,
            "mfu_spec_peak": achieved / peak if peak else None}


def recount_flops(result: dict) -> dict:
    """`result` with each workload's FLOPs counted again on this host's backend, and its TFLOP/s and MFU
    recomputed from the times measured on the device. The count is the lowered program's, the same on every
    backend (`perf_worker.program_flops`), so a result whose device miscounted can be corrected here."""
    import jax
    import perf_worker

    for dtype, row in result["dtypes"].items():
        config = benchmark_config(result.get("variant", "accelerator"), dtype, 1, result.get("tiny", False))
        config.batch_size = config.eval.batch_size = row["batch_size"]
        images, labels = perf_worker.fixed_batch(config)
        lowered, state, batch = perf_worker.lower_gan_step(config, images, labels)
        counts = {"gan_step": perf_worker.program_flops(lowered),
                  "pgd10": perf_worker.lower_pgd(config, batch["image"], batch["label"], state.d_params)[-1]}
        for name, flops in counts.items():
            row[name].update(flops=flops, **_rates(row[name]["median_s"], flops, row["matmul_tflops"],
                                                    row["spec_peak_tflops"]))
    result["flops_counted"] = f"{FLOPS_COUNTED}; recounted on {jax.default_backend()}"
    return result


def device_memory() -> dict | None:
    """The first device's allocator statistics (GPU, TPU), or None where the backend keeps none (CPU)."""
    import jax

    stats = jax.local_devices()[0].memory_stats()
    if not stats:
        return None
    return {key: stats[key] for key in ("peak_bytes_in_use", "bytes_limit") if key in stats}


def step_and_attack(config, repeats: int, matmul_n: int) -> dict:
    """The GAN step and PGD-10 on D in the config's dtype: times, MFU, compile times, memory."""
    import jax
    import perf_worker

    images, labels = perf_worker.fixed_batch(config)
    rate = matmul_rate(config.compute_dtype, matmul_n, repeats)
    peak = spec_peak(jax.devices()[0].device_kind, config.compute_dtype)
    peak = peak * jax.device_count() if peak else None
    gan = perf_worker.JaxGan(config, images, labels)
    gan()  # the first execution after compiling
    step = _summary(_times(gan, repeats), config.batch_size, gan.flops, rate, peak)
    pgd = perf_worker.jax_pgd(config, images, labels, gan.d_params)
    pgd()
    attack = _summary(_times(pgd, repeats), config.batch_size, pgd.flops, rate, peak)
    return {"batch_size": config.batch_size, "image_size": config.data.image_size,
            "matmul_tflops": rate, "spec_peak_tflops": peak,
            "gan_step": {**step, "compile_s": gan.compile_s, "flops": gan.flops, "xla_memory_bytes": gan.memory_bytes},
            "pgd10": {**attack, "compile_s": pgd.compile_s, "flops": pgd.flops},
            "device_memory": device_memory()}


def training_run(variant: str, dtype: str, per_device_batch: int, tiny: bool, steps: int, workdir: str) -> dict:
    """`steps` steps of train_and_evaluate on the embedded data: wall time and the logged losses."""
    from cfjax import train

    config = benchmark_config(variant, dtype, per_device_batch, tiny)
    config.num_steps = steps
    config.log_every = max(1, steps // 10)
    config.image_every = config.eval_every = config.checkpoint_every = steps
    # Enough synthetic images for a few epochs, not the full training set: the host makes ~200 images/s at
    # 128 px on one core, and the device would wait for it.
    config.data.num_train = min(config.data.num_train, steps * config.batch_size, MAX_TRAIN_IMAGES)
    config.data.num_validation = config.data.num_test = min(config.data.num_test, 4 * config.eval.batch_size)
    start = time.perf_counter()
    results = train.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    losses = [{k: line[k] for k in ("step", "train/d_loss", "train/g_loss") if k in line}
              for line in lines if "train/d_loss" in line]
    return {"steps": steps, "dtype": dtype, "batch_size": config.batch_size, "wall_s": wall, "losses": losses,
            "test": {k: v for k, v in results.items() if isinstance(v, int | float)}}


def markdown(result: dict) -> str:
    """The docs table: one row per workload and dtype."""
    lines = [f"{result['device_count']} × {result['device_kind']} ({result['backend']}), jax {result['jax']}, "
             f"`{result['command']}`", "", f"FLOPs: {result.get('flops_counted', 'compiled program')}.", "",
             "| workload | dtype | batch | median s | images/s | TFLOP/s | MFU (measured matmul peak) | "
             "MFU (data sheet) | compile s |", "|---|---|---|---|---|---|---|---|---|"]
    for dtype, row in result["dtypes"].items():
        for name, label in (("gan_step", "GAN step"), ("pgd10", "PGD-10 on D")):
            w = row[name]
            spec = f"{w['mfu_spec_peak']:.1%}" if w["mfu_spec_peak"] is not None else "–"
            lines.append(f"| {label} | {dtype} | {row['batch_size']} | {w['median_s']:.4f} | {w['images_per_s']:.0f} "
                         f"| {w['tflops']:.2f} | {w['mfu_measured_peak']:.1%} | {spec} | {w['compile_s']:.1f} |")
    run = result.get("training")
    if run:
        first, last = run["losses"][0], run["losses"][-1]
        lines += ["", f"Training, {run['steps']} steps ({run['dtype']}, batch {run['batch_size']}): "
                  f"{run['wall_s']:.0f} s wall clock with compilation and evaluation; d_loss "
                  f"{first['train/d_loss']:.3f} → {last['train/d_loss']:.3f}, g_loss {first['train/g_loss']:.3f} → "
                  f"{last['train/g_loss']:.3f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="accelerator", help="configs/cracks.py variant")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--per_device_batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--matmul_n", type=int, default=4096)
    parser.add_argument("--train_steps", type=int, default=300, help="0 skips the training run")
    parser.add_argument("--train_dtype", default="float32")
    parser.add_argument("--tiny", action="store_true", help="the :tiny config and small matmuls (CPU tests)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--recount", metavar="ACCELERATOR_JSON",
                        help="count the FLOPs of a saved result again here, recompute its MFU, rewrite it in --out")
    args = parser.parse_args()
    import jax

    if args.recount:
        with open(args.recount) as f:
            print(write_results(recount_flops(json.load(f)), args.out))
        return

    matmul_n = 256 if args.tiny else args.matmul_n
    result = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
              "device_count": jax.device_count(), "jax": jax.__version__, "machine": platform.machine(),
              "command": "python experiments/benchmarks/accelerator.py " + " ".join(sys.argv[1:]),
              "variant": args.variant, "tiny": args.tiny, "flops_counted": FLOPS_COUNTED, "dtypes": {}}
    for dtype in args.dtypes.split(","):
        config = benchmark_config(args.variant, dtype, args.per_device_batch, args.tiny)
        result["dtypes"][dtype] = step_and_attack(config, args.repeats, matmul_n)
        print(json.dumps({dtype: result["dtypes"][dtype]["gan_step"]["median_s"]}), flush=True)
        write_results(result, args.out)  # a device lease can end mid-run: keep each finished part
    if args.train_steps:
        with tempfile.TemporaryDirectory() as workdir:
            result["training"] = training_run(args.variant, args.train_dtype, args.per_device_batch, args.tiny,
                                              args.train_steps, workdir)
    print(write_results(result, args.out))


def write_results(result: dict, out: str) -> str:
    """accelerator.{json,md} in `out` (replaced atomically); returns the markdown table."""
    from cfjax import storage

    table = markdown(result)
    storage.make_dirs(out)
    storage.write_json_atomic(os.path.join(out, "accelerator.json"), result)
    storage.write_text_atomic(os.path.join(out, "accelerator.md"), table)
    return table


if __name__ == "__main__":
    main()
