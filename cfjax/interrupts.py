"""Ctrl-C (SIGINT) and SIGTERM at any moment of a command: the CLI installs `install()` first thing, so a
signal during start-up (importing JAX, compiling, restoring) stops the command cleanly too, not only
inside the training loop.

Outside `deferred()` a signal raises `Interrupted` at once, and is also recorded: should the exception
be swallowed (a callback from C++ code that logs and goes on), the next `check()` raises it again.
Inside `deferred()` (the training loop) a signal is only recorded, so the loop can finish its step and
save first. Where `install()` was not called (a notebook, a test), `deferred()` installs its own
recording handlers for its block, as before."""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []
_state = {"installed": False, "deferring": 0}


class Interrupted(BaseException):  # noqa: N818 (not an Exception: no `except Exception` may swallow it)
    """A stop signal arrived outside the training loop; `signum` is the signal received."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name} received")
        self.signum = signum


def _handler(signum, frame) -> None:
    _received.append(signum)
    if not _state["deferring"]:
        raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through this module for the rest of the process (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)
        _state["installed"] = True


def check() -> None:
    """Raise `Interrupted` if a stop signal arrived (even one whose exception was swallowed)."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def deferred():
    """Within the block, stop signals are recorded instead of raised; yields the list of those received
    (the first may predate the block). Signal handlers can only be installed from the main thread;
    elsewhere (a notebook's worker thread) nothing changes."""
    if _state["installed"]:
        _state["deferring"] += 1
        try:
            yield _received
        finally:
            _state["deferring"] -= 1
        return
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
