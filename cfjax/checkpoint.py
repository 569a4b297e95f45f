"""The only module that talks to orbax: save, find and restore training states with their config.

A checkpoint holds the whole `TrainState` (both networks, both optimizer states, step, key) and
the run's config as JSON, so a workdir explains itself and a mismatched config is caught before
orbax sees it.
"""

import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import flags

from cfjax.config.compare import config_differences
from cfjax.errors import CheckpointError, CheckpointFault, DataError
from cfjax.version import __version__


class _QuietOrbax(logging.Filter):
    """Drops orbax's own log records (the tracebacks its background threads log before cfjax reports the
    failure as one line, and its notes at INFO/WARNING), unless the command line set `--verbosity`
    (or `-v`): then they are shown as they come."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _from_orbax(record):
            return True
        return bool(flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present)


def _from_orbax(record: logging.LogRecord) -> bool:
    """Logged by orbax, or about an exception raised inside it (asyncio's "Task exception was never
    retrieved" for a read that failed on a checkpoint a live run deleted)."""
    orbax = f"{os.sep}orbax{os.sep}"
    if orbax in record.pathname or orbax in str(record.msg):
        return True
    error = record.exc_info[1] if record.exc_info else None
    for _ in range(8):  # the exception and the ones it was raised from
        if error is None:
            return False
        if any(orbax in frame.filename for frame in traceback.extract_tb(error.__traceback__)):
            return True
        error = error.__cause__ or error.__context__
    return False


_QUIET_ORBAX = _QuietOrbax()
logging.getLogger("absl").addFilter(_QUIET_ORBAX)  # orbax logs through absl's logger,
logging.getLogger("asyncio").addFilter(_QUIET_ORBAX)  # and asyncio reports its reads that failed on bad data

# How often a reader lists the checkpoints afresh when each one it tried vanished or was damaged.
_READ_ROUNDS = 5


class Checkpointer:
    """Orbax `CheckpointManager` over `workdir/checkpoints`, keeping the newest `max_to_keep` steps.

    With `read_only` (every reader: `cfjax.restore`, --mode=explain|attack), nothing in the workdir is
    ever created, deleted or moved, so a reader never disturbs a run training there, and every read
    (`saved_metadata`, `check_compatible`, `read_newest`) uses the newest checkpoint that reads back
    whole, falling back to older ones when the newest is damaged or deleted while being read."""

    def __init__(self, workdir: str, *, max_to_keep: int = 3, read_only: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.read_only = read_only
        if read_only:
            # (A writable manager would clean up temporary folders: the trainer's save in flight.) In a
            # multi-process program a reader is a group of one: orbax skips its cross-process barriers (a
            # restore ends in one), so a process reads alone and never waits for others to read too.
            alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                                       active_processes={jax.process_index()})
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, cleanup_tmp_directories=False,
                                                   max_to_keep=None, save_interval_steps=0,
                                                   multiprocessing_options=alone)
        else:
            # A save cut short (SIGKILL, a full disk) leaves a temporary folder that never counts as a step;
            # cleaning those up at start keeps the folder tidy. Only the one writer (workdir_lock) does this.
            options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                   cleanup_tmp_directories=True)
        self._manager = self._open(options)

    def _open(self, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
        """The orbax manager. Opening lists and stats every step: for a reader, a live run may delete a
        step in between (FileNotFoundError), so the listing is taken again."""
        for _ in range(_READ_ROUNDS):
            try:
                return ocp.CheckpointManager(self.directory, options=options)
            except FileNotFoundError:
                if not self.read_only:
                    raise
                time.sleep(0.1)
        raise CheckpointFault(f"the checkpoints in {self.directory} changed each of the {_READ_ROUNDS} times they "
                              "were listed (a run saving very often there?); try again")

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, config: ml_collections.ConfigDict, *, data_state: dict | None = None,
             training_time_s: float | None = None) -> None:
        """Save the state, its config, the input pipeline's position and the training time so far
        asynchronously; `wait()` before reading it back or exiting. A failed write (a full disk, a read-only
        folder) raises CheckpointError and leaves the checkpoints already there as they were."""
        payload = {"config": config.to_dict(), "cfjax_version": __version__}
        if training_time_s is not None:
            payload["training_time_s"] = training_time_s
        items = {"state": ocp.args.StandardSave(state), "metadata": ocp.args.JsonSave(payload)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        try:
            self._manager.save(step, args=ocp.args.Composite(**items))
        except Exception as error:  # (orbax and the OS raise many kinds)
            raise self._write_failed(step, error) from error

    def _write_failed(self, step: int | None, error: Exception) -> CheckpointFault:
        kept = [s for s in self.all_steps() if s != step]
        what = f"writing checkpoint {step}" if step is not None else "finishing a checkpoint write"
        return CheckpointFault(f"{what} in {self.directory} failed ({type(error).__name__}: {error}); the "
                               f"checkpoints already there ({kept or 'none'}) are untouched, and the same "
                               "command resumes from the newest once the cause is fixed")

    def restore_position(self, step: int, batches) -> list[int]:
        """Move `batches` (a `pipeline.TrainBatches`) to the input position saved at `step`, checking
        that it is step's batch (after the batches skipped as non-finite) over the same dataset; returns
        the indices of the skipped batches."""
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        except (ValueError, KeyError, FileNotFoundError) as error:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} has no input pipeline position (written by an older "
                f"cfjax?): {error}"
            ) from error
        position = own_position(restored["data"])
        try:
            batches.set_state(position)
        except (DataError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {step} in {self.directory}: cannot restore its input position: "
                                  f"{error}") from error
        skipped = list(position.get("skipped_batches", []))
        if batches.next_index() != step + len(skipped):
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} stores the input position of batch "
                f"{batches.next_index()}, not {step + len(skipped)} ({step} steps and {len(skipped)} skipped batches)"
            )
        return skipped

    def saved_metadata(self, step: int | None = None) -> dict:
        """{"config": ..., "cfjax_version": ...} stored beside a checkpoint (the newest by default)."""
        if self.read_only:
            return self.read_newest(self._metadata, step)[1]
        return self._metadata(self._step_or_latest(step))

    def _metadata(self, step: int) -> dict:
        return self._manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]

    def saved_training_time(self, step: int) -> float | None:
        """The training time recorded with checkpoint `step` (see `train.TrainingClock`); None when it holds
        none (saved by a cfjax before the record) or its metadata cannot be read."""
        try:
            value = self._metadata(step).get("training_time_s")
        except Exception:  # noqa: BLE001 (unreadable metadata: the time is unknown, the state may still be fine)
            return None
        return float(value) if isinstance(value, int | float) else None

    def saved_class_names(self, step: int) -> tuple[str, ...] | None:
        """The class names of the dataset checkpoint `step` was trained on (label i is name i), as its input
        position records them, so a run names its classes on a machine without the dataset; None when the
        checkpoint holds no position (an older cfjax) or it cannot be read."""
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
            names = restored["data"]["dataset"]["classes"]
        except Exception:  # noqa: BLE001 (no or unreadable position: the names are unknown, the state is fine)
            return None
        return tuple(str(name) for name in names) if isinstance(names, list) else None

    def saved_config(self, step: int | None = None) -> dict:
        """The config stored beside a checkpoint (the newest by default)."""
        return self.saved_metadata(step)["config"]

    def check_compatible(self, config: ml_collections.ConfigDict, step: int | None = None) -> None:
        """Raise `CheckpointError` naming every structural field that differs from the saved run."""
        _refuse_differences(self.directory, self.saved_metadata(step), config)

    def read_newest(self, read: Callable[[int], Any], step: int | None = None) -> tuple[int, Any]:
        """(step, `read(step)`) for the newest checkpoint (or the given `step`) that `read` can read whole.
        Steps are listed afresh, so a checkpoint a live run wrote since is found, and one it deleted, or a
        damaged one (a truncated copy, a lost folder), makes way for the next older one; a CheckpointError
        that `read` raises (a config mismatch) stops at once. One CheckpointError naming the workdir and
        every failure when nothing can be read. Nothing on disk is changed."""
        failures: dict[int, str] = {}
        on_disk: list[int] = []
        for _ in range(_READ_ROUNDS):  # a live run may replace the newest checkpoint while it is read
            try:
                self._manager.reload()
            except Exception:  # noqa: BLE001 (a step deleted while it was listed)
                time.sleep(0.1)
                continue
            on_disk = sorted(self._manager.all_steps(), reverse=True)
            candidates = [s for s in on_disk if s not in failures and (step is None or s == step)]
            if not candidates:
                break
            for candidate in candidates:
                try:
                    return candidate, read(candidate)
                except CheckpointError:
                    raise
                except Exception as error:  # noqa: BLE001 (tensorstore raises a plain Exception on bad data)
                    gone = not os.path.isdir(os.path.join(self.directory, str(candidate)))
                    what = "was deleted while being read (by the run training there?)" if gone else "could not be read"
                    failures[candidate] = f"checkpoint {candidate} {what} ({type(error).__name__}: {str(error)[:160]})"
        if not failures:
            if step is not None:
                raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; it holds steps "
                                      f"{sorted(on_disk) or 'none'}")
            raise CheckpointError(f"no checkpoint in {self.directory}")
        raise CheckpointFault(f"no readable checkpoint in {self.directory}: "
                              + "; ".join(failures[s] for s in sorted(failures, reverse=True)))

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restore onto the shardings of `abstract_state` (a tree of `jax.ShapeDtypeStruct`)."""
        step = self._step_or_latest(step)
        return self._read_state(step, ocp.args.StandardRestore(abstract_state))

    def restore_fields(self, abstract_fields: dict, step: int | None = None) -> dict:
        """Restore only some top-level fields of the saved state ({name: abstract subtree}), reading
        nothing else from disk: inference needs the parameters, not the optimizer states."""
        return self._read_state(self._step_or_latest(step), _fields_args(abstract_fields))

    def read_compatible_fields(self, config: ml_collections.ConfigDict, abstract_fields: dict,
                               step: int | None = None) -> tuple[int, dict]:
        """(step, fields) as `restore_fields`, from the newest checkpoint (or `step`) that reads back whole
        (`read_newest`), after checking that checkpoint's config against `config`."""
        def read(candidate: int) -> dict:
            _refuse_differences(self.directory, self._metadata(candidate), config)
            return self._read_state(candidate, _fields_args(abstract_fields), damaged_ok=True)

        return self.read_newest(read, step)

    def _read_state(self, step: int, args, *, damaged_ok: bool = False) -> Any:
        """The saved state of `step` as `args` describe it; a structural mismatch is a CheckpointError
        (with `damaged_ok`, every failure propagates as is, for the caller to set the step aside)."""
        try:
            return self._manager.restore(step, args=ocp.args.Composite(state=args))["state"]
        except (ValueError, KeyError, TypeError) as error:
            if damaged_ok:
                raise
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} does not match this run's state: {error}"
            ) from error

    def restore_newest_readable(self, abstract_state: Any, config: ml_collections.ConfigDict) -> tuple[Any, list]:
        """Restore the newest checkpoint that reads back whole, after checking it was written by
        `config`. A damaged one (a truncated copy, a disk error) is moved to checkpoints_damaged/ (never
        deleted) and the next older one tried; returns the state and a note per damaged checkpoint."""
        notes = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                saved = self.saved_metadata(step)
            except Exception as error:  # noqa: BLE001 (unreadable metadata)
                notes.append(self._set_aside(step, error))
                continue
            _refuse_differences(self.directory, saved, config)  # a real mismatch, not damage: stop here
            try:
                state = self._read_state(step, ocp.args.StandardRestore(abstract_state), damaged_ok=True)
            except Exception as error:  # noqa: BLE001 (tensorstore raises a plain Exception on bad data)
                notes.append(self._set_aside(step, error))
                continue
            return state, notes
        raise CheckpointFault(f"no readable checkpoint in {self.directory}: " + "; ".join(notes))

    def _set_aside(self, step: int, error: Exception) -> str:
        assert not self.read_only, "only the run's one writer moves checkpoints"
        damaged = os.path.join(os.path.dirname(self.directory), "checkpoints_damaged")
        target = os.path.join(damaged, str(step))
        if jax.process_index() == 0:  # (the other processes of a multi-process run found the same damage)
            os.makedirs(damaged, exist_ok=True)
            shutil.move(os.path.join(self.directory, str(step)), target)
            self._manager.reload()
        return f"checkpoint {step} could not be read ({type(error).__name__}: {str(error)[:160]}); moved to {target}"

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # (an asynchronous write failed)
            raise self._write_failed(None, error) from error

    def close(self) -> None:
        self.wait()
        self._manager.close()

    def _step_or_latest(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint in {self.directory}")
        elif step not in self.all_steps():
            raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; it holds steps "
                                  f"{self.all_steps() or 'none'}")
        return step


def _refuse_differences(directory: str, saved: dict, config: ml_collections.ConfigDict) -> None:
    """CheckpointError naming every structural field where `config` differs from the saved metadata's,
    and the cfjax version that wrote them when it is not this one."""
    diffs = config_differences(saved["config"], config.to_dict())
    if diffs:
        version = saved.get("cfjax_version", "unknown")
        writer = f" (written by cfjax {version}; this is {__version__})" if version != __version__ else ""
        raise CheckpointError(
            f"the checkpoints in {directory} were written by an incompatible config{writer}:\n  " + "\n  ".join(diffs)
            + "\nUse another --workdir, or the saved config (checkpoints/<step>/metadata)."
        )


def _fields_args(abstract_fields: dict) -> Any:
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_fields)
    return ocp.args.PyTreeRestore(item=abstract_fields, restore_args=restore_args, partial_restore=True)


def own_position(saved: dict) -> dict:
    """This process's input position in a checkpoint's "data" item. A multi-process run stores each process's
    in "per_process"; a run resumed with another process count (or a single-process checkpoint) uses the
    top-level one: element s of every host's pipeline is its part of global batch s, so the positions of all
    hosts count the same batches (`pipeline.training_dataset`)."""
    per_process = saved.get("per_process")
    if per_process and len(per_process) == jax.process_count():
        return {**saved, **per_process[jax.process_index()]}
    return saved


def abstract_like(state: Any) -> Any:
    """Shape, dtype and sharding of every leaf: the target orbax restores onto."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
