"""One writer per workdir: `with held(workdir): ...` around a training run.

The lock is `fcntl.flock` on `WORKDIR/.cfjax.lock`, which the kernel releases when its holder exits,
however it exits (a SIGKILL, a crash, a preempted VM's restart): no stale lock is ever left to clear
by hand. The holder writes who it is (pid, host, start time, command) into the file, and a second
writer is refused at once with that line. The file itself is never deleted (deleting a lock file
races with a process that just opened it), and readers (`cfjax.restore`, --mode=explain|attack) take
no lock. On a file system without flock (some network mounts) the run goes on unlocked, with a warning.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time

from cfjax.errors import CheckpointError

LOCK_NAME = ".cfjax.lock"


class WorkdirInUse(CheckpointError):
    """Another process is training in this workdir; the message names it."""


def _holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(getattr(sys, "orig_argv", sys.argv))}


def describe_holder(path: str) -> str:
    """The holder written into the lock file at `path`, as words (or why it is unknown)."""
    for _ in range(20):  # the holder writes its line just after taking the lock
        try:
            with open(path) as f:
                text = f.read()
            if text.strip():
                info = json.loads(text)
                return (f"pid {info['pid']} on host {info['host']}, started {info['started']}, "
                        f"command: {info['command']}")
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    return "a process that has not written its name yet"


@contextlib.contextmanager
def held(workdir: str, enabled: bool = True):
    """Hold the workdir's writer lock for the block; `WorkdirInUse` at once if another process holds it.
    Only one process of a multi-host run takes it (`enabled`)."""
    if not enabled:
        yield
        return
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise WorkdirInUse(
                    f"{os.path.abspath(workdir)} is in use by another training run ({describe_holder(path)}); "
                    "wait for it to finish, stop it, or use another --workdir") from None
            print(f"cfjax: warning: cannot lock {path} ({error.strerror}); nothing stops a second run from "
                  "writing to this workdir at the same time", flush=True)
            yield
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_info()).encode() + b"\n", 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # (the kernel releases the lock itself when the file is closed)
    finally:
        os.close(fd)
