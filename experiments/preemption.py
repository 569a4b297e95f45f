"""Preemption, proven by fault injection. A real training run (the command line, as a subprocess) is
killed with SIGKILL at random moments, some of them while it writes a checkpoint, and restarted with
the same command until it finishes. Its final parameters, optimizer states, PRNG key, logged metrics
and results must equal, bit for bit, those of an uninterrupted run of the same config.

    python experiments/preemption.py --kills=20      # the README figure (a few minutes on 2 CPU cores)

`tests/test_preemption.py` runs the same harness with 5 kills. Writes --out/preemption.{json,md}.
"""

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_FIELDS = ("train/steps_per_sec", "wall_time_s", "training_wall_time_s")  # the only outputs allowed to differ


def command(workdir: str, num_steps: int) -> list[str]:
    """The tiny config, checkpointing every 2 steps and logging every step, so kills land anywhere, with a
    step-dependent learning rate (cosine) for G; evaluation and figures only at the end."""
    return [sys.executable, "-m", "cfjax.main", "--config=configs/cracks.py:tiny", f"--config.num_steps={num_steps}",
            "--config.checkpoint_every=2", "--config.log_every=1", "--config.keep_checkpoints=2",
            "--config.eval_every=1000", "--config.image_every=1000", "--config.optimizer.generator.schedule=cosine",
            f"--workdir={workdir}"]


def _logged_step(workdir: str) -> int:
    """The newest step in metrics.jsonl (0 if none)."""
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    steps = [0]
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass
    return max(steps)


def _checkpoint_entries(workdir: str) -> list[str]:
    try:
        return os.listdir(os.path.join(workdir, "checkpoints"))
    except OSError:
        return []


def committed_steps(workdir: str) -> list[int]:
    """Steps whose checkpoint is complete: orbax writes into a temporary folder and renames it to the
    step number once everything is on disk, so a save cut short never has a numeric name."""
    return sorted(int(entry) for entry in _checkpoint_entries(workdir) if entry.isdigit())


def kill_once(workdir: str, num_steps: int, target: int, during_save: bool, log) -> dict:
    """Start the run, wait until it has logged step `target` (and, with `during_save`, until a checkpoint
    is being written), then SIGKILL it. Returns what happened."""
    before = committed_steps(workdir)
    leftovers = set(_checkpoint_entries(workdir))  # temporary folders of saves killed earlier
    with open(log, "a") as out:
        proc = subprocess.Popen(command(workdir, num_steps), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        in_save = False
        while proc.poll() is None:
            logged = _logged_step(workdir)
            if logged >= target:
                in_save = any("tmp" in entry for entry in set(_checkpoint_entries(workdir)) - leftovers)
                # A save is caught in the act when the poll lands in it; give up after two more saves.
                if in_save or not during_save or logged >= min(target + 4, num_steps - 1):
                    break
            time.sleep(0.001)
        if proc.poll() is not None:
            return {"target": target, "killed": False, "returncode": proc.returncode}
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return {"target": target, "killed": True, "during_save": in_save, "logged_step": _logged_step(workdir),
            "committed_before": before[-1] if before else None, "committed_after": committed_steps(workdir)}


def _resumed_from(log: str, start: int) -> int | None:
    """The step the run after byte `start` of the log said it resumed from (None: from scratch)."""
    with open(log) as f:
        f.seek(start)
        text = f.read()
    marker = "cfjax: resuming from step "
    if marker not in text:
        return None
    return int(text.split(marker, 1)[1].split()[0])


def every_third_from_the_second(kill: int) -> bool:
    """Which kills wait for a checkpoint write, by default: the 2nd, 5th, 8th ..."""
    return kill % 3 == 1


def interrupted_run(workdir: str, num_steps: int, kills: int, seed: int, *, kill=None, finish=None,
                    during_save: Callable[[int], bool] = every_third_from_the_second) -> list[dict]:
    """`kills` SIGKILLs at increasing random steps (kill i during a checkpoint write where `during_save(i)`),
    each followed by a restart of the same command; then a final restart that must finish.

    `kill(target, rng, during_save, log)` starts the run and kills it (default: `kill_once`, one process)
    and `finish(log)` runs the final restart, returning fields for its event: multihost.py passes its
    two-process versions, so both experiments share this loop and its random draws."""
    kill = kill or (lambda target, rng, during_save, log: kill_once(workdir, num_steps, target, during_save, log))
    finish = finish or (lambda log: _finish(workdir, num_steps, log))
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(1, num_steps), kills))
    log = os.path.join(os.path.dirname(workdir), "interrupted.log")
    events = []
    for i, target in enumerate(targets):
        start = os.path.getsize(log) if os.path.exists(log) else 0
        event = kill(target, rng, during_save(i), log)
        event["resumed_from"] = _resumed_from(log, start)
        events.append(event)
    start = os.path.getsize(log)
    final = finish(log)
    events.append({"final": True, **final, "resumed_from": _resumed_from(log, start)})
    return events


def _finish(workdir: str, num_steps: int, log: str) -> dict:
    """The last restart of the one-process run, which must finish."""
    with open(log, "a") as out:
        subprocess.run(command(workdir, num_steps), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=True)
    return {}


def checkpoints_lost(events: list[dict]) -> int:
    """Restarts that did not resume from the newest checkpoint committed when the run before was killed."""
    lost = 0
    for killed, restart in itertools.pairwise(events):
        if killed.get("killed"):
            newest = killed["committed_after"][-1] if killed["committed_after"] else None
            lost += restart["resumed_from"] != newest
    return lost


def final_state(workdir: str):
    """The whole training state of the newest checkpoint, as numpy (parameters, optimizer states, key)."""
    import jax

    from cfjax import checkpoint, kinds, parallel
    from cfjax.saved_runs import saved_config

    config = saved_config(workdir)
    kind = kinds.make_kind(config, parallel.make_mesh())
    checkpointer = checkpoint.Checkpointer(workdir, read_only=True)
    try:
        abstract = jax.eval_shape(kind.init_state, jax.random.PRNGKey(config.seed))
        return jax.device_get(checkpointer.restore(abstract))
    finally:
        checkpointer.close()


def _records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def differences(straight: str, interrupted: str) -> list[str]:
    """Everything that differs between the two runs' outputs (empty: bit-identical)."""
    import jax
    import numpy as np

    diffs = []
    a, b = final_state(straight), final_state(interrupted)
    for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)):
        if not np.array_equal(np.asarray(x), np.asarray(y)):
            diffs.append(f"state{jax.tree_util.keystr(path)}")
    if _records(straight) != _records(interrupted):
        diffs.append("metrics.jsonl")
    results = []
    for workdir in (straight, interrupted):
        with open(os.path.join(workdir, "results.json")) as f:
            results.append({k: v for k, v in json.load(f).items() if k not in TIMING_FIELDS})
    if results[0] != results[1]:
        diffs.append("results.json")
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40, help="training steps (more than --kills)")
    parser.add_argument("--seed", type=int, default=0, help="draws the kill points")
    parser.add_argument("--dir", default=os.path.join(REPO, "runs", "preemption"))
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()
    if args.kills >= args.steps:
        parser.error("--steps must exceed --kills (one kill point per step at most)")
    start = time.time()
    straight, interrupted = os.path.join(args.dir, "straight"), os.path.join(args.dir, "interrupted")
    for workdir in (straight, interrupted):
        if os.path.exists(workdir):
            raise SystemExit(f"{workdir} exists: remove {args.dir} to start over")
    os.makedirs(args.dir)
    with open(os.path.join(args.dir, "straight.log"), "w") as out:
        subprocess.run(command(straight, args.steps), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=True)
    events = interrupted_run(interrupted, args.steps, args.kills, args.seed)
    diffs = differences(straight, interrupted)
    killed = [e for e in events if e.get("killed")]
    summary = {"kills": len(killed), "during_checkpoint_write": sum(e["during_save"] for e in killed),
               "checkpoints_lost": checkpoints_lost(events), "differences": diffs, "steps": args.steps,
               "seed": args.seed, "events": events, "wall_time_s": round(time.time() - start, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "preemption.json"), "w") as f:
        json.dump(summary, f, indent=2)
    verdict = "bit-identical" if not diffs else f"DIFFERENT: {', '.join(diffs)}"
    markdown = (f"{summary['kills']} SIGKILLs ({summary['during_checkpoint_write']} during a checkpoint write) over "
                f"{args.steps} steps of configs/cracks.py:tiny; checkpoints lost: {summary['checkpoints_lost']}; "
                f"final state, optimizer states, metrics and results vs an uninterrupted run: {verdict} "
                f"({summary['wall_time_s'] / 60:.1f} min).\n")
    with open(os.path.join(args.out, "preemption.md"), "w") as f:
        f.write(markdown)
    print(markdown)
    if diffs or summary["checkpoints_lost"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
