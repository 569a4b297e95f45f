"""Local multi-process runs: `python -m cfjax.launch --processes=2 [--devices_per_process=1] -- <cfjax.main flags>`.

Starts N copies of `python -m cfjax.main` on this machine as one JAX multi-controller run (JAX's
`jax.distributed` runtime, cross-process collectives over gloo/TCP on the CPU): a free loopback port for
process 0's coordinator, and `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` and
`--xla_force_host_platform_device_count` in each process's environment. It is how the multi-host code paths
run (and are tested) on one machine; on a TPU pod slice or a GPU cluster every host runs `cfjax.main` itself
(docs/multihost.md).

Process 0's output passes through as is; the others' lines are prefixed "[process i] "; once one process has
failed, the others' lines other than cfjax's own are replaced by one note at the end (the C++ fatal-error dump
of JAX's distributed runtime, which ends them when a peer dies; --full_output keeps it). SIGINT and SIGTERM
are forwarded to every process (each saves its part of the step in progress and stops). When one process
fails or dies, the others get --settle_s to end by themselves (the same error, or the heartbeat timeout
that notices a dead peer), then SIGTERM, then SIGKILL after --grace_s: no process is left waiting for a
dead peer. The exit code is the first failing process's (128 + N for a signal N), 0 when all succeeded.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    """A TCP port free on the loopback interface now (the coordinator binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(index: int, processes: int, port: int, devices_per_process: int, environ=None) -> dict:
    """The environment of process `index`: where the coordinator is, who this process is, and its devices."""
    env = dict(os.environ if environ is None else environ)
    xla_flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).strip()
    env.update({
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": str(processes),
        "JAX_PROCESS_ID": str(index),
        "XLA_FLAGS": f"{xla_flags} --xla_force_host_platform_device_count={devices_per_process}".strip(),
        "PYTHONUNBUFFERED": "1",
    })
    env.setdefault("JAX_PLATFORMS", "cpu")  # a local launch is for CPU processes (GPUs: one process per GPU, SLURM)
    return env


def _die_with_parent() -> None:
    """In the child, before exec: its own process group (a terminal's Ctrl-C reaches only the launcher, which
    forwards it once), and SIGKILL should the launcher itself die (Linux), so no orphan keeps training."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# The first line of the report JAX's distributed runtime logs (C++, glog) before it aborts a process whose peer died.
_JAX_FATAL = re.compile(rb"[EF]\d{4} [\d:.]+\s+\d+ (coordination_service\S*|client\.h):\d+\]")


def exit_code(returncode: int) -> int:
    """A child's return code as a shell's exit code (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class Launch:
    """N processes of one run; `wait()` returns the exit code."""

    def __init__(self, argv: list[str], *, processes: int, devices_per_process: int = 1, grace_s: float = 30.0,
                 settle_s: float = 10.0, port: int | None = None, module: str = "cfjax.main",
                 full_output: bool = False):
        self.grace_s, self.settle_s, self.full_output = grace_s, settle_s, full_output
        port = port or free_port()
        self.procs: list[subprocess.Popen] = []
        self._threads = []
        self._failed: int | None = None  # the first process that failed, once the launcher has seen it
        self._held = [0] * processes  # per process: 0 passing lines, -1 holding them, N > 0 lines held
        for index in range(processes):
            proc = subprocess.Popen([sys.executable, "-m", module, *argv],
                                    env=process_env(index, processes, port, devices_per_process),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            self.procs.append(proc)
            thread = threading.Thread(target=self._pipe, args=(index, sys.stdout), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pipe(self, index: int, out) -> None:
        """Process `index`'s output, prefixed for all but process 0. Once another process has failed, or this one
        began JAX's fatal-error report (`_JAX_FATAL`), only its "cfjax" lines pass (see `_dump_note`)."""
        stream, prefix = self.procs[index].stdout, b"" if index == 0 else f"[process {index}] ".encode()
        for line in iter(stream.readline, b""):
            if not self.full_output and not self._held[index] and (self._failed not in (None, index)
                                                                  or _JAX_FATAL.match(line)):
                self._held[index] = -1  # from here on
            if self._held[index] and not line.startswith(b"cfjax"):
                self._held[index] = max(self._held[index], 0) + 1
                continue
            out.buffer.write(prefix + line)
            out.buffer.flush()
        stream.close()

    def _dump_note(self, index: int) -> str:
        return (f"cfjax.launch: process {index} ended with exit code {exit_code(self.procs[index].returncode)}; "
                f"{self._held[index]} lines of JAX's fatal-error dump left out (when a process dies, JAX's distributed "
                "runtime aborts the others from C++, LOG(FATAL), out of Python's reach; --full_output shows it)")

    def signal_all(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def wait(self) -> int:
        """Until every process has ended; the first failure stops the others (SIGTERM, then SIGKILL)."""
        first_failure, term_at, stop_at = None, None, None
        while None in [proc.poll() for proc in self.procs]:  # (a list: every process polled, not the first only)
            if first_failure is None:
                for index, proc in enumerate(self.procs):
                    if proc.returncode not in (None, 0):
                        first_failure, self._failed = (index, proc.returncode), index
                        print(f"cfjax.launch: process {index} ended with exit code {exit_code(proc.returncode)}; "
                              "stopping the others", file=sys.stderr, flush=True)
                        term_at = time.monotonic() + self.settle_s
                        break
            if term_at is not None and time.monotonic() > term_at:
                self.signal_all(signal.SIGTERM)
                term_at, stop_at = None, time.monotonic() + self.grace_s
            if stop_at is not None and time.monotonic() > stop_at:
                print(f"cfjax.launch: processes still running {self.grace_s:g} s after SIGTERM; killing them",
                      file=sys.stderr, flush=True)
                self.signal_all(signal.SIGKILL)
                stop_at = None
            time.sleep(0.05)
        if first_failure is None:  # (every process ended within one poll: a peer's death takes the others at once)
            first_failure = next(((i, p.returncode) for i, p in enumerate(self.procs) if p.returncode), None)
            if first_failure is not None:
                print(f"cfjax.launch: process {first_failure[0]} ended with exit code {exit_code(first_failure[1])}",
                      file=sys.stderr, flush=True)
        for thread in self._threads:
            thread.join(timeout=5)
        for index, held in enumerate(self._held):
            if held > 0:
                print(self._dump_note(index), file=sys.stderr, flush=True)
        return 0 if first_failure is None else exit_code(first_failure[1])


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m cfjax.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="how many processes (JAX 'hosts')")
    parser.add_argument("--devices_per_process", type=int, default=1, help="forced CPU devices in each process")
    parser.add_argument("--grace_s", type=float, default=30.0,
                        help="after one process fails: seconds the others get to stop before SIGKILL")
    parser.add_argument("--settle_s", type=float, default=10.0,
                        help="after one process fails: seconds the others get to end by themselves before SIGTERM")
    parser.add_argument("--port", type=int, default=0, help="the coordinator's port (default: a free one)")
    parser.add_argument("--full_output", action="store_true",
                        help="after one process fails, show the others' whole output (JAX's fatal-error dump) too")
    if "--" in argv:
        split = argv.index("--")
        ours, theirs = argv[:split], argv[split + 1:]
    else:
        ours, theirs = argv, []
    args = parser.parse_args(ours)
    if args.processes < 1 or args.devices_per_process < 1:
        parser.error("--processes and --devices_per_process must be at least 1")
    if not theirs:
        parser.error("give cfjax.main's flags after --, e.g. -- --config=configs/cracks.py:tiny --workdir=runs/x")
    return args, theirs


def main(argv: list[str] | None = None) -> int:
    args, theirs = parse(sys.argv[1:] if argv is None else argv)
    launch = Launch(theirs, processes=args.processes, devices_per_process=args.devices_per_process,
                    grace_s=args.grace_s, settle_s=args.settle_s, port=args.port or None, full_output=args.full_output)

    def forward(signum, frame):
        launch.signal_all(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    return launch.wait()


if __name__ == "__main__":
    sys.exit(main())
