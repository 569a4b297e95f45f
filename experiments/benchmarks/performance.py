"""cfjax against the PyTorch stack on this machine: GAN step and PGD-10 throughput, MFU, compile times,
1 -> N device scaling, peak memory and the input pipeline, in one command.

    python experiments/benchmarks/performance.py [--sizes=64,128] [--devices=1,2] [--repeats=7] [--tiny]

The PyTorch peer (experiments/benchmarks/torch_peer.py: the same G and D, losses and Adam, checked to
compute the same function from the same weights) and torchattacks are optional:

    pip install -e '.[bench]' && pip install --no-deps torchattacks

Each device count runs in its own process (perf_worker.py), where cfjax and the peers are timed in
turn on the same batch (A B A B ...): medians, and the median of the round-by-round time ratios. MFU is
the step's FLOPs (XLA's cost analysis) over its time, against the best fp32 matmul rate measured in the
same process. Peak memory and compile times (cold: empty persistent cache; warm: second process on the
same cache) come from separate processes, one per framework and workload. Writes
experiments/benchmarks/results/performance.{json,md}.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SYSTEMS = ("cfjax", "torch_eager", "torch_compile", "torchattacks")


def run_worker(args: list[str], env: dict | None = None) -> dict:
    """perf_worker.py ARGS in a fresh process; its last stdout line is the JSON result."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "perf_worker.py"), *args], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if proc.returncode:
        raise SystemExit(f"perf_worker.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args) -> dict:
    tiny = (["--tiny"] if args.tiny else []) + ([] if args.torch_compile else ["--no-torch-compile"])
    sizes = ",".join(map(str, args.sizes))
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "command": _command(), "speed": {},
              "memory": []}
    for devices in args.devices:
        # The peers run beside cfjax's default device count (the last) only: their figures do not depend on it.
        peer = ["--switches"] if devices == args.devices[-1] else ["--no-peer"]
        with tempfile.TemporaryDirectory() as cache:  # every run of the benchmark compiles cold
            print(f"speed, {devices} device(s) ...", flush=True)
            result["speed"][str(devices)] = run_worker(
                ["--task=speed", f"--devices={devices}", f"--sizes={sizes}", f"--repeats={args.repeats}", *tiny,
                 *peer], {"JAX_COMPILATION_CACHE_DIR": cache})
    default_devices = str(args.devices[-1])
    for size in args.sizes:
        for workload in args.memory_workloads:
            with tempfile.TemporaryDirectory() as cache:
                for framework, attempt in (("jax", "cold"), ("jax", "warm"), ("torch", "")):
                    print(f"memory: {framework} {workload} {size} px {attempt}", flush=True)
                    row = run_worker(["--task=memory", f"--devices={default_devices}", f"--framework={framework}",
                                      f"--workload={workload}", f"--size={size}", *tiny],
                                     {"JAX_COMPILATION_CACHE_DIR": cache})
                    result["memory"].append({**row, "compile_cache": attempt or None})
    return result


def _command() -> str:
    return " ".join(["python", os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


def markdown(result: dict) -> str:
    """The README's performance tables."""
    speed = result["speed"]
    counts = sorted(speed, key=int)
    many = counts[-1]
    # The machine's attainable fp32 rate: the best large matmul of any process in the run.
    peak = max((speed[c]["peak"] for c in counts), key=lambda p: p["gflops"])
    torch_peak = f", torch {peak['torch_gflops']:.0f}" if "torch_gflops" in peak else ""
    lines = [f"`{result['command']}` on {result['machine']} ({speed[many]['backend']}; peer: {speed[many]['peer']}). "
             f"fp32 matmul peak measured in the run: {peak['gflops']:.0f} GFLOP/s (XLA {peak['jax_gflops']:.0f}"
             f"{torch_peak}).",
             "", "Throughput (images/s, median), time ratio to cfjax on the same machine in the same process "
             "(round by round, A B A B), and MFU (XLA's FLOP count of the step / time / peak):", "",
             "| workload | px | " + " | ".join(f"cfjax {speed[c]['devices']} dev" for c in counts)
             + " | torch eager | torch.compile | torchattacks | peer time / cfjax time |",
             "|---|---|" + "---|" * (len(counts) + 4)]
    for size in speed[many]["sizes"]:
        for workload, label in (("gan_step", "GAN step"), ("pgd10", "PGD-10 on D")):
            row = speed[many]["sizes"][size]
            flops = speed[counts[0]]["sizes"][size][f"{workload}_flops"]  # one device: no replicated work
            cells = [_throughput(speed[c]["sizes"][size], workload, "cfjax", flops, peak) for c in counts]
            cells += [_throughput(row, workload, system, flops, peak) for system in SYSTEMS[1:]]
            ratios = ", ".join(f"{system.replace('_', ' ')} {timing['ratio_to_cfjax']:.2f}"
                               for system, timing in row[workload].items() if system != "cfjax")
            lines.append(f"| {label} | {size} | " + " | ".join(cells) + f" | {ratios or '—'} |")
    lines += ["", "Compile time (s) of the GAN step or of PGD-10, peak resident memory of a process running three "
              "calls (MB), "
              "and XLA's own buffer sizes:", "",
              "| workload | px | framework | compile s (cold / warm cache) | peak RSS MB | XLA temporaries MB |",
              "|---|---|---|---|---|---|"]
    cold = {(m["workload"], m["size"]): m for m in result["memory"] if m.get("compile_cache") == "cold"}
    for m in result["memory"]:
        if m.get("compile_cache") == "cold" or "skipped" in m:
            continue
        key = (m["workload"], m["size"])
        if m["framework"] == "jax":
            compile_s = f"{cold[key]['compile_s']:.1f} / {m['compile_s']:.1f}"
            # One device's process holds the whole step's temporaries (N devices hold N shares).
            whole_step = speed[counts[0]]["sizes"][str(m["size"])]["xla_memory_bytes"]["temporaries"]
            temporaries = f"{whole_step / 2**20:.0f}" if m["workload"] == "gan" else "—"
        else:
            checks = speed[many]["sizes"][str(m["size"])].get("peer_checks", {})
            first = checks.get("torch_compile_first_call_s")
            compile_s = f"torch.compile first call {first:.1f}" if first and m["workload"] == "gan" else "—"
            temporaries = "—"
        lines.append(f"| {m['workload']} | {m['size']} | {m['framework']} | {compile_s} | {m['peak_rss_mb']:.0f} | "
                     f"{temporaries} |")
    syncs = "; ".join(f"{size} px {row['sync_cost_s_per_step']['sync_every_step']:.3f} vs "
                      f"{row['sync_cost_s_per_step']['sync_at_end']:.3f}" for size, row in speed[many]["sizes"].items())
    switches = "; ".join(f"{size} px " + ", ".join(f"{name} {timing['ratio_to_default']:.2f}×"
                                                   for name, timing in row["switches"].items() if name != "default")
                         for size, row in speed[many]["sizes"].items() if "switches" in row)
    if switches:
        lines += ["", f"The `:accelerator` configs' switches on this machine ({many} devices), GAN step time "
                  f"against the default fp32 step, round by round in one process: {switches}."]
    lines += ["", f"Host sync, s/step reading a scalar after every step vs waiting once after several "
              f"({many} devices): "
              f"{syncs}. Input pipeline (embedded data into device arrays): "
              f"{speed[many]['loader_images_per_s']:.0f} images/s."]
    return "\n".join(lines) + "\n"


def _throughput(row: dict, workload: str, system: str, flops: float | None, peak: dict) -> str:
    timing = row[workload].get(system)
    if timing is None:
        return "—"
    text = f"{row['batch'] / timing['median_s']:.1f}"
    if flops:  # the same function everywhere, so the same FLOPs
        text += f" ({100 * flops / timing['median_s'] / (peak['gflops'] * 1e9):.0f}% MFU)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128])
    parser.add_argument("--devices", type=lambda s: [int(v) for v in s.split(",")],
                        default=sorted({1, min(os.cpu_count() or 1, 8)}))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tiny", action="store_true", help="the :tiny config (tests; pass --sizes=16)")
    parser.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                        help="leave out the torch.compile peer (its first call compiles for minutes on a CPU)")
    parser.add_argument("--memory-workloads", dest="memory_workloads", type=lambda s: s.split(","),
                        default=["gan", "pgd"], help="which workloads get the memory and compile-time processes")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    result = measure(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "performance.json"), "w") as f:
        json.dump(result, f, indent=2)
    table = markdown(result)
    with open(os.path.join(args.out, "performance.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
