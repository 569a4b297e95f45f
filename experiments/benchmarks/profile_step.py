"""Where the GAN step's and PGD-10's time goes: a `jax.profiler` trace of a few calls, each executed XLA
operation matched to the compiled HLO and grouped (convolutions forward / input gradient / kernel gradient,
normalisation with the activations and adds XLA fused into it, layout copies, the rest), with the
convolutions' achieved GFLOP/s.

    python experiments/benchmarks/profile_step.py [--size=64] [--devices=2] [--calls=5] [--workloads=gan,pgd]

Writes experiments/benchmarks/results/profile_{size}px.{json,md}; the raw trace (TensorBoard / Perfetto)
stays in a temporary folder unless --trace_dir is given. XLA:CPU records one trace event per executed
operation (thunk), so the sum of an operation's events is its time, summed over devices.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CATEGORIES = ("conv forward", "conv input gradient", "conv kernel gradient", "normalisation (with what XLA fused in)",
              "layout (transpose, copy, concatenate, pad, slice)", "other")
# `%name = TYPE opcode(operands), attributes`; TYPE is an array (f32[16,32]{1,0}) or a tuple of them.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(?P<name>[\w.\-]+) = (?P<type>.*?) (?P<op>[\w\-]+)\((?P<args>[^)]*)\)"
                          r"(?P<rest>.*)$")
# Operations whose trace events enclose those of the operations they run: counted through those.
_CONTROL_FLOW = ("conditional", "while", "call")
_LAYOUT_OPS = ("transpose", "copy", "concatenate", "pad", "slice", "dynamic-slice", "reshape", "bitcast")


def _dims(type_text: str) -> list[int]:
    """[16,32,32,4] from 'f32[16,32,32,4]{3,2,1,0}'; [] for a tuple or a scalar."""
    match = re.match(r"[a-z0-9]+\[([0-9,]*)\]", type_text)
    return [int(d) for d in match[1].split(",") if d] if match else []


def parse_hlo(text: str) -> dict:
    """Every instruction of a compiled module's HLO text: its opcode, shape, operands, attributes and the
    computation it lives in (fused computations included, so a fusion can be looked into)."""
    instructions, computation = {}, None
    for line in text.splitlines():
        if line.rstrip().endswith("{") and "=" not in line.split("(")[0]:
            computation = line.split()[0 if not line.startswith("ENTRY") else 1].lstrip("%")
            continue
        match = _INSTRUCTION.match(line)
        if match:
            rest = match["rest"]
            calls = re.search(r"calls=%([\w.\-]+)", rest)
            op_name = re.search(r'op_name="([^"]*)"', rest)
            instructions[match["name"]] = {
                "op": match["op"], "shape": _dims(match["type"]), "computation": computation,
                "operands": re.findall(r"%([\w.\-]+)", match["args"]), "rest": rest,
                "calls": calls[1] if calls else None, "op_name": op_name[1] if op_name else ""}
    return instructions


def conv_flops(conv: dict, instructions: dict) -> float:
    """2 x output elements x window taps x input features per group (padding taps counted)."""
    window = re.search(r"size=([\dx]+)", conv["rest"])
    taps = 1
    for d in (window[1].split("x") if window else []):
        taps *= int(d)
    labels = re.search(r"dim_labels=(\w+)_", conv["rest"])
    lhs = instructions.get(conv["operands"][0], {}).get("shape", [])
    groups = re.search(r"feature_group_count=(\d+)", conv["rest"])
    features = lhs[labels[1].index("f")] if labels and lhs else 0
    out = 1
    for d in conv["shape"]:
        out *= d
    return 2.0 * out * taps * features / (int(groups[1]) if groups else 1)


def computations(instructions: dict) -> dict:
    """Computation name -> its instructions (a fusion's body is the computation it `calls`)."""
    bodies = collections.defaultdict(list)
    for inst in instructions.values():
        bodies[inst["computation"]].append(inst)
    return bodies


def classify(name: str, instructions: dict, bodies: dict) -> tuple[str, float]:
    """The category of an executed operation and its FLOPs (convolutions only; 0 otherwise)."""
    inst = instructions[name]
    body = bodies.get(inst["calls"], []) if inst["calls"] else []
    conv = inst if inst["op"] == "convolution" else next((i for i in body if i["op"] == "convolution"), None)
    if conv is not None:
        return _conv_direction(conv, inst, instructions), conv_flops(conv, instructions)
    names = " ".join([inst["op_name"], *(i["op_name"] for i in body)])
    if "Norm" in names:
        return "normalisation (with what XLA fused in)", 0.0
    # A fusion is named after its main operations (copy_bitcast_fusion) and carries the source's op_name
    # (.../Downsample_0/transpose), which also says when a layout change absorbed an elementwise add.
    if inst["op"] in _LAYOUT_OPS or name.split("_")[0] in _LAYOUT_OPS or inst["op_name"].rsplit("/", 1)[-1] in \
            _LAYOUT_OPS:
        return "layout (transpose, copy, concatenate, pad, slice)", 0.0
    return "other", 0.0


def _conv_direction(conv: dict, inst: dict, instructions: dict) -> str:
    """A kernel gradient slides the output gradient over the whole input (its window is the input's image
    size, its output the kernel's); an input gradient is a convolution that JAX's transpose made. A
    forward convolution recomputed in the backward pass (`remat`) counts as an input gradient."""
    window = re.search(r"size=([\dx]+)", conv["rest"])
    labels = re.search(r"dim_labels=(\w+)_\w+->(\w+)", conv["rest"])
    lhs = instructions.get(conv["operands"][0], {}).get("shape", [])
    if window and labels and lhs:
        spatial = [lhs[labels[1].index(d)] for d in labels[1] if d.isdigit()]
        out_spatial = [conv["shape"][labels[2].index(d)] for d in labels[2] if d.isdigit()]
        if [int(d) for d in window[1].split("x")] == spatial and out_spatial != spatial:
            return "conv kernel gradient"
    return "conv input gradient" if "transpose(" in (conv["op_name"] or inst["op_name"]) else "conv forward"


def trace_events(trace_dir: str) -> list[dict]:
    """Complete ('X') events of the newest Perfetto trace under `trace_dir`."""
    path = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "perfetto_trace.json.gz")))[-1]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X"]


def profile(call, hlo_text: str, calls: int, trace_dir: str) -> dict:
    """Trace `calls` calls of `call` (already compiled and warmed up) and group the executed operations."""
    import jax

    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    try:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        wall = (time.perf_counter() - start) / calls
    finally:
        jax.profiler.stop_trace()
    instructions = parse_hlo(hlo_text)
    bodies = computations(instructions)
    per_op, executions = collections.defaultdict(float), collections.Counter()
    for event in trace_events(trace_dir):
        if event["name"] in instructions and instructions[event["name"]]["op"] not in _CONTROL_FLOW:
            per_op[event["name"]] += event["dur"] * 1e-6 / calls
            executions[event["name"]] += 1
    if not per_op:
        raise SystemExit("no trace event matched an operation of the compiled program")
    groups = {c: {"seconds": 0.0, "flops": 0.0, "operations": 0} for c in CATEGORIES}
    top = []
    for name, seconds in per_op.items():
        category, flops = classify(name, instructions, bodies)
        flops *= executions[name] / calls  # the HLO is one device's program: once per device per call
        groups[category]["seconds"] += seconds
        groups[category]["flops"] += flops
        groups[category]["operations"] += 1
        top.append({"operation": name, "category": category, "seconds": seconds, "flops": flops,
                    "shape": instructions[name]["shape"], "op_name": instructions[name]["op_name"]})
    top.sort(key=lambda row: -row["seconds"])
    return {"wall_s_per_call": wall, "operation_s_per_call": sum(per_op.values()), "categories": groups,
            "top_operations": top[:15]}


def workloads(size: int, tiny: bool, names: list[str]) -> tuple[dict, int]:
    """name -> (call, compiled HLO text) for the benchmark's GAN step and PGD-10 on the same batch, and
    the batch size."""
    import perf_worker

    config = perf_worker.make_config(size, tiny)
    images, labels = perf_worker.fixed_batch(config)
    gan = perf_worker.JaxGan(config, images, labels)
    out = {}
    if "gan" in names:
        out["gan"] = (gan, gan.step.as_text())
    if "pgd" in names:
        pgd = perf_worker.jax_pgd(config, gan.batch["image"], gan.batch["label"], gan.d_params)
        out["pgd"] = (pgd, pgd.compiled.as_text())
    return out, config.batch_size


def markdown(result: dict) -> str:
    lines = [f"# Where the time goes ({result['size']} px, batch {result['batch']}, {result['devices']} device(s))",
             "", f"`{result['command']}`", ""]
    if "matmul_peak" in result:
        lines += [f"The host's fp32 matmul peak in the same process: {result['matmul_peak']['gflops']:.0f} GFLOP/s "
                  f"(XLA {result['matmul_peak']['jax_gflops']:.0f}).", ""]
    for workload, row in result["workloads"].items():
        devices, op_s = result["devices"], row["operation_s_per_call"]
        lines += [f"## {workload}: {row['wall_s_per_call']:.3f} s per call; operations {op_s:.3f} s summed over "
                  f"{devices} device(s) ({op_s / devices / row['wall_s_per_call']:.0%} of the wall time per device)",
                  "", "| category | s per call (all devices) | share | operations | GFLOP (all devices) "
                  "| GFLOP/s per device |",
                  "|---|---|---|---|---|---|"]
        for category, group in row["categories"].items():
            rate = (f"{group['flops'] / group['seconds'] / 1e9:.1f}" if group["flops"] and group["seconds"]
                    else "—")
            lines.append(f"| {category} | {group['seconds']:.3f} | {group['seconds'] / op_s:.0%} | "
                         f"{group['operations']} | {group['flops'] / 1e9:.2f} | {rate} |")
        lines += ["", "Slowest operations:", "",
                  "| operation | category | output shape (one device) | ms (all devices) | GFLOP/s per device | from |",
                  "|---|---|---|---|---|---|"]
        for op in row["top_operations"]:
            rate = f"{op['flops'] / op['seconds'] / 1e9:.1f}" if op["flops"] else "—"
            lines.append(f"| {op['operation']} | {op['category']} | {op['shape']} | {op['seconds'] * 1e3:.1f} | "
                         f"{rate} | {op['op_name'].removeprefix('jit(step)/')[:70]} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=["gan", "pgd"])
    parser.add_argument("--tiny", action="store_true", help="the :tiny config (the test suite's smoke run)")
    parser.add_argument("--trace_dir", default="", help="keep the raw traces here (default: a temporary folder)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={args.devices}"])
    sys.path[:0] = [HERE, REPO]
    from cfjax import host_memory

    host_memory.keep_freed_memory()  # as the command line runs
    import jax
    import perf_worker

    result = {"command": " ".join(["python", os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
              "size": args.size, "devices": jax.device_count(), "backend": jax.default_backend(),
              "xla_flags": os.environ["XLA_FLAGS"], "workloads": {},
              # this host's speed today, beside the profile: a slow day shows here
              "matmul_peak": perf_worker.matmul_peak(5, 512 if args.tiny else 2048)}
    calls, result["batch"] = workloads(args.size, args.tiny, args.workloads)
    for name, (call, hlo_text) in calls.items():
        call()  # warm-up: first execution
        with tempfile.TemporaryDirectory() as scratch:
            trace_dir = os.path.join(args.trace_dir, name) if args.trace_dir else scratch
            result["workloads"][name] = profile(call, hlo_text, args.calls, trace_dir)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"profile_{args.size}px")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
