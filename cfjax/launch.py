"""Local multi-process runs: `python -m cfjax.launch --processes=2 [--devices_per_process=1] -- <cfjax.main flags>`.

Starts N copies of `python -m cfjax.main` on this machine as one JAX multi-controller run (JAX's
`jax.distributed` runtime, cross-process collectives over gloo/TCP on the CPU): a free loopback port for
process 0's coordinator, and `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` and
`--xla_force_host_platform_device_count` in each process's environment. It is how the multi-host code paths
run (and are tested) on one machine; on a TPU pod slice or a GPU cluster every host runs `cfjax.main` itself
(docs/multihost.md).

Process 0's output passes through as is; the others' lines are prefixed "[process i] ". SIGINT and SIGTERM
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


def _pipe(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, b""):
        out.buffer.write(prefix.encode() + line if prefix else line)
        out.buffer.flush()
    stream.close()


def exit_code(returncode: int) -> int:
    """A child's return code as a shell's exit code (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class Launch:
    """N processes of one run; `wait()` returns the exit code."""

    def __init__(self, argv: list[str], *, processes: int, devices_per_process: int = 1, grace_s: float = 30.0,
                 settle_s: float = 10.0, port: int | None = None, module: str = "cfjax.main"):
        self.grace_s, self.settle_s = grace_s, settle_s
        port = port or free_port()
        self.procs: list[subprocess.Popen] = []
        self._threads = []
        for index in range(processes):
            proc = subprocess.Popen([sys.executable, "-m", module, *argv],
                                    env=process_env(index, processes, port, devices_per_process),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            self.procs.append(proc)
            prefix = "" if index == 0 else f"[process {index}] "
            thread = threading.Thread(target=_pipe, args=(proc.stdout, prefix, sys.stdout), daemon=True)
            thread.start()
            self._threads.append(thread)

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
                        first_failure = (index, proc.returncode)
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
        for thread in self._threads:
            thread.join(timeout=5)
        if first_failure is None:
            failed = [proc.returncode for proc in self.procs if proc.returncode]
            return exit_code(failed[0]) if failed else 0
        return exit_code(first_failure[1])


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
                    grace_s=args.grace_s, settle_s=args.settle_s, port=args.port or None)

    def forward(signum, frame):
        launch.signal_all(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    return launch.wait()


if __name__ == "__main__":
    sys.exit(main())
