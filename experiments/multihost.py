"""Multi-process runs, proven on one machine: JAX's multi-controller runtime with real cross-process
collectives (gloo over loopback TCP), started by `python -m cfjax.launch`.

1. 2 processes x 1 device train bit-identically to 1 process x 2 devices (state, optimizer states, key,
   metrics.jsonl, results.json: `preemption.differences`).
2. A 2-process run is SIGKILLed --kills times, each time in a random process at a random step (every third
   one while a checkpoint is written), and restarted with the same command until it finishes: the other
   process and the launcher must stop within a bounded time, no committed checkpoint may be lost, and the end
   state must equal the uninterrupted 1 x 2 run's, bit for bit.
3. Steps/s of 1 x 2 against 2 x 1 (after compilation).

    python experiments/multihost.py --kills=10      # docs/multihost.md's figures (~15 min on 2 CPU cores)

With --evaluations=N instead: each of --mode=explain, attack and predict on a 2 x 1 run, N times under the
launcher (every run under a timeout), against one 1-process run of each: exit codes, seconds, and whether
the numbers are the same (docs/multihost.md#evaluation-in-several-processes). Writes
--out/multihost_evaluation.{json,md}.

`tests/test_multihost.py` runs the same harness with fewer kills. Writes --out/multihost.{json,md}.
"""

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import preemption  # noqa: E402  (the single-process harness: logged steps, committed checkpoints, differences)

REPO = preemption.REPO
HEARTBEAT_S = 10  # a dead process is noticed by the others within this (JAX's default is 100 s)


def environ(devices: int | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "CFJAX_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_S), "JAX_PLATFORMS": "cpu"}
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def command(workdir: str, num_steps: int, processes: int, extra: tuple = ()) -> list[str]:
    """The preemption harness's tiny run, on `processes` processes of one device each (1: one process with
    two devices, see `run`)."""
    main_flags = preemption.command(workdir, num_steps)[3:] + list(extra)  # after `python -m cfjax.main`
    if processes == 1:
        return [sys.executable, "-m", "cfjax.main", *main_flags]
    return [sys.executable, "-m", "cfjax.launch", f"--processes={processes}", "--grace_s=20", "--", *main_flags]


def run(workdir: str, num_steps: int, processes: int, log: str, extra: tuple = (), timeout: float = 600) -> int:
    """One run to its end (1 process: 2 devices; N processes: 1 device each); its exit code."""
    with open(log, "a") as out:
        return subprocess.run(command(workdir, num_steps, processes, extra), cwd=REPO, stdout=out,
                              stderr=subprocess.STDOUT, env=environ(2 if processes == 1 else None),
                              timeout=timeout).returncode


# Each evaluation mode's flags: attack sweeps cut to seconds (its --config must agree with the fields the run
# was trained with: `command`'s).
EVALUATION = {
    "explain": [],
    "attack": ["--config=configs/cracks.py:tiny", "--config.optimizer.generator.schedule=cosine",
               "--config.num_steps={steps}", "--config.attack.max_examples=4",
               "--config.attack.linf_epsilons_255=(4.0,)", "--config.attack.l2_epsilons=(0.5,)",
               "--config.attack.paper_step_sizes_255=(4.0,)", "--config.attack.strong_restarts=1"],
    "predict": ["--folder={photos}"],
}


def _json_fields(name: str, fields: tuple) -> Callable:
    return lambda out: {k: v for k, v in json.loads((pathlib.Path(out) / name).read_text()).items() if k in fields}


# The numbers each mode's outputs must hold equal in 1 and 2 processes (paths and wall times differ).
NUMBERS = {
    "explain": _json_fields("explain.json", ("step", "data", "settings", "methods")),
    "attack": _json_fields("robustness.json", ("step", "data", "settings", "models")),
    "predict": lambda out: (pathlib.Path(out) / "predictions.csv").read_text(),
}


def photos(folder) -> str:
    """Two small photos of different sizes and formats for --mode=predict."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (40, 56, 3)), ("b.jpg", (33, 33, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(os.path.join(folder, name))
    return str(folder)


def evaluation_flags(mode: str, workdir: str, num_steps: int, out, scratch) -> list[str]:
    """cfjax.main's flags for `mode` on the run `command(workdir, num_steps, ...)` trained."""
    extra = [flag.format(steps=num_steps, photos=photos(os.path.join(scratch, "photos"))) for flag in EVALUATION[mode]]
    return [f"--workdir={workdir}", f"--mode={mode}", f"--out={out}", *extra]


def evaluations(base: str, num_steps: int, repeats: int) -> dict:
    """Each evaluation mode `repeats` times in 2 processes against once in 1 (1 device each)."""
    workdir = os.path.join(base, "2x1")
    if not os.path.isdir(workdir):
        run(workdir, num_steps, 2, workdir + ".log")
    rows = []
    for mode in EVALUATION:
        reference = os.path.join(base, f"{mode}_1x1")
        one = subprocess.run([sys.executable, "-m", "cfjax.main",
                              *evaluation_flags(mode, workdir, num_steps, reference, base)],
                             cwd=REPO, env=environ(1), capture_output=True, text=True, timeout=900)
        if one.returncode:
            raise SystemExit(f"the 1-process {mode} failed:\n{one.stderr[-3000:]}")
        for index in range(repeats):
            out, start = os.path.join(base, f"{mode}_2x1_{index}"), time.monotonic()
            try:
                code = subprocess.run([sys.executable, "-m", "cfjax.launch", "--processes=2", "--",
                                       *evaluation_flags(mode, workdir, num_steps, out, base)], cwd=REPO,
                                      env=environ(), capture_output=True, timeout=900).returncode
            except subprocess.TimeoutExpired:
                code = "timeout (900 s)"
            rows.append({"mode": mode, "run": index, "exit_code": code, "seconds": round(time.monotonic() - start, 1),
                         "same_numbers_as_1_process": code == 0 and NUMBERS[mode](out) == NUMBERS[mode](reference)})
            print(rows[-1], flush=True)
    return {"steps": num_steps, "repeats": repeats, "runs": rows}


def children(pid: int) -> list[int]:
    """The launcher's processes (its children), in start order: process 0 first."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(p) for p in f.read().split())
    except OSError:
        return []


def kill_once(workdir: str, num_steps: int, target: int, victim: int, during_save: bool, log: str,
              timeout: float = 300) -> dict:
    """Start the 2-process run, wait until step `target` is logged (and, with `during_save`, a checkpoint is
    being written), SIGKILL process `victim`, and time how long the launcher takes to stop everything."""
    before = preemption.committed_steps(workdir)
    leftovers = set(preemption._checkpoint_entries(workdir))
    deadline = time.monotonic() + timeout
    with open(log, "a") as out:
        launcher = subprocess.Popen(command(workdir, num_steps, 2), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env=environ())
        in_save = False
        while launcher.poll() is None and time.monotonic() < deadline:
            logged = preemption._logged_step(workdir)
            if logged >= target:
                in_save = any("tmp" in e for e in set(preemption._checkpoint_entries(workdir)) - leftovers)
                if in_save or not during_save or logged >= min(target + 4, num_steps - 1):
                    break
            time.sleep(0.002)
        pids = children(launcher.pid)
        if launcher.poll() is not None or len(pids) < 2:
            launcher.wait(timeout=60)
            return {"target": target, "killed": False, "returncode": launcher.returncode}
        os.kill(pids[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            code = launcher.wait(timeout=120)
        except subprocess.TimeoutExpired:  # must not happen: the test fails on it
            launcher.kill()
            launcher.wait()
            code = "hang"
        stopped_s = round(time.monotonic() - killed_at, 1)
    return {"target": target, "victim": victim, "killed": True, "during_save": in_save,
            "logged_step": preemption._logged_step(workdir), "launcher_exit": code, "stop_s": stopped_s,
            "committed_before": before[-1] if before else None,
            "committed_after": preemption.committed_steps(workdir)}


def interrupted_run(workdir: str, num_steps: int, kills: int, seed: int,
                    during_save: Callable[[int], bool] = preemption.every_third_from_the_second) -> list[dict]:
    """preemption.py's kill-and-restart loop on the 2-process run, each SIGKILL to a random process (those
    where `during_save(i)` while a checkpoint is being written)."""
    return preemption.interrupted_run(
        workdir, num_steps, kills, seed, during_save=during_save,
        kill=lambda target, rng, in_save, log: kill_once(workdir, num_steps, target, rng.randrange(2),
                                                          during_save=in_save, log=log),
        finish=lambda log: {"returncode": run(workdir, num_steps, 2, log)})


def steps_per_sec(workdir: str) -> float:
    """The median logged steps/s after the first log (which includes compiling)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rates = [r["train/steps_per_sec"] for r in map(json.loads, f) if "train/steps_per_sec" in r]
    return statistics.median(rates[1:])


def speed(base: str, num_steps: int) -> dict:
    """Steps/s of 1 x 2 and 2 x 1 on this machine: no checkpoints, evaluation or images in between."""
    extra = ("--config.log_every=10", "--config.checkpoint_every=100000")
    out = {}
    for processes, name in ((1, "1x2"), (2, "2x1")):
        workdir = os.path.join(base, f"speed_{name}")
        run(workdir, num_steps, processes, os.path.join(base, f"speed_{name}.log"), extra)
        out[name] = round(steps_per_sec(workdir), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--speed_steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluations", type=int, default=0,
                        help="only run each evaluation mode this many times in 2 processes (see above)")
    parser.add_argument("--dir", default=os.path.join(REPO, "runs", "multihost"))
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()
    start = time.time()
    if os.path.exists(args.dir):
        raise SystemExit(f"{args.dir} exists: remove it to start over")
    os.makedirs(args.dir)
    if args.evaluations:
        return _evaluations_report(args, start)
    single, double = os.path.join(args.dir, "1x2"), os.path.join(args.dir, "2x1")
    run(single, args.steps, 1, os.path.join(args.dir, "1x2.log"))
    run(double, args.steps, 2, os.path.join(args.dir, "2x1.log"))
    same = preemption.differences(single, double)
    interrupted = os.path.join(args.dir, "interrupted")
    events = interrupted_run(interrupted, args.steps, args.kills, args.seed)
    diffs = preemption.differences(single, interrupted)
    killed = [e for e in events if e.get("killed")]
    summary = {"2x1_vs_1x2": same, "kills": len(killed),
               "during_checkpoint_write": sum(e["during_save"] for e in killed),
               "checkpoints_lost": preemption.checkpoints_lost(events), "max_stop_s": max(e["stop_s"] for e in killed),
               "differences": diffs, "steps": args.steps, "seed": args.seed, "heartbeat_timeout_s": HEARTBEAT_S,
               "events": events}
    summary["steps_per_sec"] = speed(args.dir, args.speed_steps)
    summary["wall_time_s"] = round(time.time() - start, 1)
    verdict = lambda d: "bit-identical" if not d else f"DIFFERENT: {', '.join(d[:5])}"  # noqa: E731
    markdown = (f"2 processes x 1 device vs 1 process x 2 devices, {args.steps} steps of configs/cracks.py:tiny: "
                f"{verdict(same)}.\n\n{summary['kills']} SIGKILLs of a random process of a 2-process run "
                f"({summary['during_checkpoint_write']} during a checkpoint write), each followed by a restart: "
                f"every stop within {summary['max_stop_s']} s of the kill (heartbeat timeout {HEARTBEAT_S} s); "
                f"checkpoints lost: {summary['checkpoints_lost']}; end state, metrics and results vs the "
                f"uninterrupted 1 x 2 run: {verdict(diffs)}.\n\nSteps/s after compilation (loopback, 2 CPU cores): "
                f"1 x 2 {summary['steps_per_sec']['1x2']}, 2 x 1 {summary['steps_per_sec']['2x1']} "
                f"({summary['wall_time_s'] / 60:.1f} min in all).\n")
    _write(args.out, "multihost", summary, markdown)
    if same or diffs or summary["checkpoints_lost"]:
        sys.exit(1)


def _write(out: str, name: str, summary: dict, markdown: str) -> None:
    """out/name.json and out/name.md, and the markdown printed."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(markdown)
    print(markdown)


def _evaluations_report(args, start: float) -> None:
    summary = evaluations(args.dir, 8, args.evaluations)
    summary["wall_time_s"] = round(time.time() - start, 1)
    lines = [f"Each evaluation mode {args.evaluations} times in 2 processes x 1 device (`cfjax.launch`) on an 8-step "
             "2 x 1 run of configs/cracks.py:tiny, against once in 1 process x 1 device "
             f"({summary['wall_time_s'] / 60:.1f} min in all, 2 CPU cores shared with other jobs):", "",
             "| mode | runs | exit code 0 | same numbers as 1 process | seconds (min to max) |",
             "|---|---|---|---|---|"]
    for mode in EVALUATION:
        rows = [r for r in summary["runs"] if r["mode"] == mode]
        seconds = [r["seconds"] for r in rows]
        lines.append(f"| {mode} | {len(rows)} | {sum(r['exit_code'] == 0 for r in rows)} | "
                     f"{sum(r['same_numbers_as_1_process'] for r in rows)} | {min(seconds)} to {max(seconds)} |")
    _write(args.out, "multihost_evaluation", summary, "\n".join(lines) + "\n")
    if not all(r["same_numbers_as_1_process"] for r in summary["runs"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
