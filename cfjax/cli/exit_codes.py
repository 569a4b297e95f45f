"""Each error the CLI reports as one line, its exit code and its line, in this one place
(docs/reliability.md#exit-codes). Unknown errors are bugs: `exit_code` returns None and the traceback shows."""

import sys

from cfjax import interrupts
from cfjax.errors import CheckpointError, CheckpointFault, ConfigError, DataError

NON_FINITE = 1  # training stopped on NaN/Inf values (the update was not applied)
USAGE_ERROR = 2  # bad flags, config or input data: the command cannot work as typed
FAULT = 3  # the machine or a saved file failed: a full disk, a read-only folder, a damaged checkpoint
SIGNAL_BASE = 128  # stopped by signal N (Ctrl-C: 130, SIGTERM: 143): the shell's convention


def _train_module():
    """cfjax.train if it is imported (it is only once JAX may start): its errors are not importable before."""
    return sys.modules.get("cfjax.train")


def _is_fault(error: BaseException) -> bool:
    """A CheckpointError is a usage error (this workdir cannot serve this command) unless it is a
    `CheckpointFault` (a write failed, nothing reads back) or an OSError lies underneath it."""
    if not isinstance(error, CheckpointError):
        return isinstance(error, OSError)
    return isinstance(error, CheckpointFault) or isinstance(error.__cause__, OSError)


def exit_code(error: BaseException) -> int | None:
    """The exit code of an error cfjax reports as one line; None for an unexpected error (a bug: its
    traceback is shown)."""
    if isinstance(error, SystemExit | KeyboardInterrupt):
        return None  # already reported (flag errors), or not cfjax's to report
    train = _train_module()
    if isinstance(error, interrupts.Interrupted) or (train and isinstance(error, train.Preempted)):
        return SIGNAL_BASE + error.signum
    if train and isinstance(error, train.NonFiniteError):
        return NON_FINITE
    if _is_fault(error):
        return FAULT
    if isinstance(error, (ConfigError, CheckpointError, DataError)):
        return USAGE_ERROR
    return None


def message(error: BaseException) -> str:
    """The line printed for `error` (after "cfjax: ")."""
    train = _train_module()
    if train and isinstance(error, train.NonFiniteError):
        return f"training stopped: {error}"
    if train and isinstance(error, train.Preempted):
        return str(error)
    if isinstance(error, interrupts.Interrupted):
        return (f"{error}: stopped before finishing; nothing was left half-written, and the same command "
                "starts again (a training run resumes from its newest checkpoint)")
    return f"error: {error}"
