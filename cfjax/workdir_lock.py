"""One writer per folder: `held(workdir)` around a training run, and `output_held(out_dir)` around an
analysis (--mode=explain|attack|predict) writing into its output folder.

The lock is `fcntl.flock` on `FOLDER/.cfjax.lock`, which the kernel releases when its holder exits,
however it exits (a SIGKILL, a crash, a preempted VM's restart): no stale lock is ever left to clear
by hand. The holder writes who it is (pid, host, start time, command) into the file, and a second
writer is refused at once with that line. The file itself is never deleted (deleting a lock file
races with a process that just opened it). An analysis reads a workdir without its training lock (it may
run beside the training) but holds its own output folder's: two attacks resuming the same saved
settings, or two predictions into one folder, would otherwise interleave their files. On a file system
without flock (some network mounts) the run goes on unlocked, with a warning.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time

from cfjax import storage
from cfjax.errors import CheckpointError

LOCK_NAME = ".cfjax.lock"


class WorkdirInUse(CheckpointError):
    """Another process is writing into this folder (training in this workdir, or an analysis into this output
    folder); the message names it."""


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
def held(folder: str, enabled: bool = True, *, holder: str = "training run", instead: str = "another --workdir"):
    """Hold the folder's writer lock for the block; `WorkdirInUse` at once if another process holds it, naming
    it as another `holder` and suggesting `instead`. Only one process of a multi-host run takes it (`enabled`)."""
    if not enabled:
        yield
        return
    path = os.path.join(folder, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise WorkdirInUse(
                    f"{os.path.abspath(folder)} is in use by another {holder} ({describe_holder(path)}); "
                    f"wait for it to finish, stop it, or use {instead}") from None
            print(f"cfjax: warning: cannot lock {path} ({error.strerror}); nothing stops a second run from "
                  "writing to this folder at the same time", flush=True)
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


def output_held(out_dir: str, enabled: bool = True):
    """`held` for an analysis's output folder, created here: a second analysis into it is refused (the message
    gives the first one's command, hence its mode)."""
    if enabled:
        storage.make_dirs(out_dir)
    return held(out_dir, enabled, holder="analysis", instead="another --out")
