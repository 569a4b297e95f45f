"""Run several experiment commands at once until a deadline, then pack what they made: how the table runs use a
machine that is lent for minutes (one GPU for one call: docs/reproducing.md, "A machine for minutes").

    python experiments/job_batch.py --jobs=JOBS.txt --budget_s=540 --pack=DIR [--runs=/tmp/runs] [--parallel=8]

JOBS.txt has one job a line, `NAME: COMMAND`, a shell command run from the repository root in which `{runs}`
stands for --runs and `{out}` for the job's own results folder (--results/NAME): the table scripts take it as
`--out`, so each job's run records land apart and no two jobs write one table. `#` starts a comment line.

Jobs start together (at most --parallel at once; the rest wait for a free slot). At --budget_s after the start
every job still running gets SIGTERM, to its whole process group (cfjax saves the step it is at and exits),
and SIGKILL --grace_s later. Every --pack_every_s, and at the end, --pack receives `records.tgz` (every job's
run records, RESULTS/NAME/runs/) and `logs.tgz` (each job's output and the logs of the runs under --runs), each
replaced whole, so a machine taken back at any moment leaves the last complete pair. At the end it also gets
`unfinished.tgz`: the folders of runs with a checkpoint but no analysis yet (no images), to finish on another
machine, unless that is over --max_pack_mb.
"""

import argparse
import dataclasses
import io
import os
import signal
import subprocess
import tarfile
import time

from harness import OUTPUTS, REPO  # OUTPUTS: the file each analysis mode writes in its folder


@dataclasses.dataclass
class Job:
    """One command line of the batch, and its process once started."""
    name: str
    command: str
    process: subprocess.Popen | None = None
    outcome: str = "not started"


def read_jobs(path: str) -> list[Job]:
    """The jobs of a JOBS file; a malformed line or a name given twice stops with the line's number."""
    jobs, names = [], set()
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, command = line.partition(":")
            name, command = name.strip(), command.strip()
            if not sep or not name or not command or not name.replace("_", "").replace("-", "").isalnum():
                raise SystemExit(f"{path}:{number}: expected 'NAME: COMMAND' with NAME in letters, digits, _ and -")
            if name in names:
                raise SystemExit(f"{path}:{number}: job {name!r} is named twice")
            names.add(name)
            jobs.append(Job(name, command))
    if not jobs:
        raise SystemExit(f"{path}: no jobs")
    return jobs


def group_alive(process: subprocess.Popen) -> bool:
    """Whether any process of the job's group is left: the command's own shell may end before what it started."""
    process.poll()
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def unfinished_runs(runs: str) -> list[str]:
    """Run folders under `runs` that hold checkpoints but no analysis (no `*/robustness.json`, `*/explain.json`)."""
    found = []
    for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        folder = os.path.join(runs, name)
        if not os.path.isdir(os.path.join(folder, "checkpoints")):
            continue
        analysed = any(os.path.exists(os.path.join(folder, sub, analysis))
                       for sub in os.listdir(folder) for analysis in OUTPUTS.values())
        if not analysed:
            found.append(name)
    return found


def write_tar(path: str, members: list[tuple[str, str]], exclude_images: bool = False) -> int:
    """A gzipped tar of (path on disk, name in the archive) at `path`, written beside it and moved into place;
    its size in bytes."""
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if exclude_images and info.name.endswith((".png", ".jpg")) else info

    partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    with tarfile.open(partial, "w:gz") as tar:
        for source, name in members:
            if os.path.exists(source):
                tar.add(source, arcname=name, filter=keep)
    os.replace(partial, path)
    return os.path.getsize(path)


def pack(pack_dir: str, results: str, logs: str, runs: str) -> None:
    """records.tgz and logs.tgz as they are now."""
    records = [(os.path.join(results, job, "runs"), os.path.join(job, "runs"))
               for job in sorted(os.listdir(results)) if os.path.isdir(os.path.join(results, job, "runs"))]
    write_tar(os.path.join(pack_dir, "records.tgz"), records)
    run_logs = [(os.path.join(runs, run, name), os.path.join("runs", run, name))
                for run in (sorted(os.listdir(runs)) if os.path.isdir(runs) else [])
                if os.path.isdir(os.path.join(runs, run))
                for name in sorted(os.listdir(os.path.join(runs, run))) if name.endswith(".log")]
    write_tar(os.path.join(pack_dir, "logs.tgz"), [(logs, "jobs"), *run_logs])


def tail(path: str, size: int = 1500) -> str:
    with open(path, "rb") as f:
        f.seek(0, io.SEEK_END)
        f.seek(max(0, f.tell() - size))
        return f.read().decode(errors="replace")


def run_batch(jobs: list[Job], *, runs: str, results: str, pack_dir: str, budget_s: float, parallel: int = 8,
              grace_s: float = 30.0, poll_s: float = 2.0, pack_every_s: float = 20.0,
              max_pack_mb: float = 16.0) -> list[Job]:
    """Run `jobs` until they end or `budget_s` passes, stop the rest, pack; the jobs with their outcomes."""
    logs = os.path.join(results, ".logs")  # each job's output, JOB.log
    for folder in (runs, results, pack_dir, logs):
        os.makedirs(folder, exist_ok=True)
    start = time.monotonic()
    last_pack = start
    pending, running = list(jobs), []
    while (pending or running) and time.monotonic() - start < budget_s:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            out = os.path.join(results, job.name)
            os.makedirs(out, exist_ok=True)
            command = job.command.replace("{runs}", runs).replace("{out}", out)
            with open(os.path.join(logs, f"{job.name}.log"), "ab") as log:
                job.process = subprocess.Popen(["bash", "-c", command], cwd=REPO, stdout=log,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               start_new_session=True)
            job.outcome = "running"
            running.append(job)
            print(f"[{time.monotonic() - start:.0f}s] started {job.name}: {command}", flush=True)
        time.sleep(poll_s)
        for job in list(running):
            if not group_alive(job.process):
                running.remove(job)
                job.outcome = f"finished, exit code {job.process.wait()}"
                print(f"[{time.monotonic() - start:.0f}s] {job.name} {job.outcome}; its output ends:\n"
                      f"{tail(os.path.join(logs, f'{job.name}.log'))}", flush=True)
        if time.monotonic() - last_pack >= pack_every_s:
            pack(pack_dir, results, logs, runs)
            last_pack = time.monotonic()
    for job in running:
        signal_group(job.process, signal.SIGTERM)
        job.outcome = "stopped at the budget"
    deadline = time.monotonic() + grace_s
    while any(group_alive(job.process) for job in running) and time.monotonic() < deadline:
        time.sleep(0.5)
    for job in running:
        if group_alive(job.process):
            signal_group(job.process, signal.SIGKILL)
            job.outcome = "killed at the budget (did not stop within the grace time)"
        job.process.wait()
    pack(pack_dir, results, logs, runs)
    unfinished = unfinished_runs(runs)
    if unfinished:
        path = os.path.join(pack_dir, "unfinished.tgz")
        size = write_tar(path, [(os.path.join(runs, run), run) for run in unfinished], exclude_images=True)
        if size > max_pack_mb * 2**20:
            os.remove(path)
            print(f"unfinished runs {', '.join(unfinished)}: {size / 2**20:.1f} MB, over {max_pack_mb} MB: not packed")
        else:
            print(f"unfinished runs {', '.join(unfinished)}: unfinished.tgz, {size / 2**20:.1f} MB")
    for job in jobs:
        print(f"{job.name}: {job.outcome}")
    return jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", required=True, help="the JOBS file: one 'NAME: COMMAND' a line")
    parser.add_argument("--budget_s", type=float, required=True, help="seconds from the start until jobs are stopped")
    parser.add_argument("--pack", default=os.environ.get("OUT"), help="where the tar files go (default: $OUT)")
    parser.add_argument("--runs", default="/tmp/runs", help="the run folders' parent, {runs} in the commands")
    parser.add_argument("--results", default="/tmp/job_results", help="each job's {out} is RESULTS/NAME")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--grace_s", type=float, default=30.0, help="from SIGTERM to SIGKILL")
    parser.add_argument("--pack_every_s", type=float, default=20.0)
    parser.add_argument("--max_pack_mb", type=float, default=16.0, help="the largest unfinished.tgz kept")
    args = parser.parse_args(argv)
    if not args.pack:
        parser.error("--pack: give a folder (or set OUT)")
    run_batch(read_jobs(args.jobs), runs=args.runs, results=args.results, pack_dir=args.pack,
              budget_s=args.budget_s, parallel=args.parallel, grace_s=args.grace_s,
              pack_every_s=args.pack_every_s, max_pack_mb=args.max_pack_mb)


if __name__ == "__main__":
    main()
