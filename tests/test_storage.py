"""Storage faults outside checkpoints, without training: every writer of cfjax turns a full disk, a
read-only file system or a file in the way into one StorageError line naming the path and the cause,
JSON results are written atomically, and the CLI maps each error type to its exit code.

Faults are simulated by monkeypatching (ENOSPC, EROFS) and by a file where a folder should be: the tests
run as root, where a chmod'ed folder does not stop writes, so a real read-only folder cannot be used."""

import errno
import json
import os
import signal

import numpy as np
import pytest

from cfjax import interrupts, storage, train, visualize
from cfjax.cli import exit_codes
from cfjax.errors import CheckpointError, CheckpointFault, ConfigError, DataError, StorageError
from cfjax.explain import report as explain_report
from cfjax.robustness import report as robustness_report

ENOSPC = OSError(errno.ENOSPC, "No space left on device")
EROFS = OSError(errno.EROFS, "Read-only file system")


def _failing_replace(error):
    def replace(*args, **kwargs):
        raise error
    return replace


@pytest.mark.parametrize("error", [ENOSPC, EROFS])
def test_a_failed_json_write_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch, error):
    path = tmp_path / "results.json"
    storage.write_json_atomic(str(path), {"step": 6})
    monkeypatch.setattr(storage.os, "replace", _failing_replace(error))
    with pytest.raises(StorageError, match=rf"^writing {path} failed: {error.strerror}$"):
        storage.write_json_atomic(str(path), {"step": 7})
    assert json.loads(path.read_text()) == {"step": 6}  # the old file whole, never a truncated new one
    assert os.listdir(tmp_path) == ["results.json"]  # no temp file left behind


def test_a_json_write_cut_short_leaves_the_old_file(tmp_path, monkeypatch):
    """The write itself fails half-way (the disk fills up): the reader still sees the whole old file."""
    path = tmp_path / "explain.json"
    storage.write_json_atomic(str(path), {"old": True})
    real_fdopen = os.fdopen

    class HalfFile:
        def __init__(self, *args, **kwargs):
            self.file = real_fdopen(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[: len(data) // 2])
            raise ENOSPC

    monkeypatch.setattr(storage.os, "fdopen", HalfFile)
    with pytest.raises(StorageError, match="No space left on device"):
        storage.write_json_atomic(str(path), {"new": list(range(100))})
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["explain.json"]


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["umask 022", "umask 077", "umask 002"])
def test_written_files_get_the_permissions_of_a_plain_open(tmp_path, umask, expected):
    """Results, PNGs and reports are shared like any file a program writes: 0o666 less the umask, not the
    owner-only mode of a temp file; a file rewritten in place keeps the mode its owner gave it."""
    previous = os.umask(umask)
    try:
        storage.write_json_atomic(str(tmp_path / "summary.json"), {"images": 3})
        visualize.save_png(str(tmp_path / "mask.png"), np.zeros((4, 4, 3), np.uint8))
        kept = tmp_path / "predictions.csv"
        kept.write_text("old")
        os.chmod(kept, 0o640)
        storage.write_text_atomic(str(kept), "new")
    finally:
        os.umask(previous)
    assert oct(os.stat(tmp_path / "summary.json").st_mode & 0o777) == oct(expected)
    assert oct(os.stat(tmp_path / "mask.png").st_mode & 0o777) == oct(expected)
    assert oct(os.stat(kept).st_mode & 0o777) == oct(0o640) and kept.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["mask.png", "predictions.csv", "summary.json"]


def test_check_writable_refuses_a_file_in_the_way_and_creates_nothing(tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match=rf"writing into folder {blocker} failed: it exists and is a file"):
        storage.check_writable(str(blocker))
    with pytest.raises(StorageError, match=rf"{blocker} exists and is a file"):
        storage.check_writable(str(blocker / "explain"))
    storage.check_writable(str(tmp_path / "new" / "deeper"))
    assert sorted(os.listdir(tmp_path)) == ["run"]  # the check creates nothing


@pytest.mark.parametrize("error", [ENOSPC, EROFS])
def test_check_writable_refuses_a_full_or_read_only_disk(tmp_path, monkeypatch, error):
    def mkstemp(*args, **kwargs):
        raise error

    monkeypatch.setattr(storage.tempfile, "mkstemp", mkstemp)
    with pytest.raises(StorageError, match=rf"writing into folder {tmp_path / 'out'} failed: {error.strerror}"):
        storage.check_writable(str(tmp_path / "out"))


def test_an_unreadable_json_reads_as_none(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"step": 6, "test": {"acc')  # cut short
    assert storage.read_json(str(path)) is None
    assert storage.read_json(str(tmp_path / "missing.json")) is None


@pytest.mark.parametrize("error", [ENOSPC, EROFS])
def test_image_grids_and_figures_name_the_path(tmp_path, monkeypatch, error):
    monkeypatch.setattr(storage.os, "replace", _failing_replace(error))
    grid = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(StorageError, match=rf"writing {tmp_path / 'a.png'} failed: {error.strerror}"):
        visualize.save_png(tmp_path / "a.png", grid)
    panels = [np.zeros((8, 8, 3), np.float32)] * 2
    with pytest.raises(StorageError, match=rf"writing {tmp_path / 'figures'}/x_iou0.50.png failed"):
        explain_report.write_figures(str(tmp_path), [{"name": "x", "iou": 0.5, "panels": panels}], np.arange(1),
                                     max_figures=1, contact_rows=1)


def test_a_folder_of_the_explain_report_blocked_by_a_file(tmp_path):
    (tmp_path / "figures").write_text("in the way")
    panels = [np.zeros((8, 8, 3), np.float32)] * 2
    with pytest.raises(StorageError, match=r"creating folder .*figures failed: it exists and is a file"):
        explain_report.write_figures(str(tmp_path), [{"name": "x", "iou": 0.5, "panels": panels}], np.arange(1),
                                     max_figures=1, contact_rows=1)


def _attack_results():
    row = {"group": "linf", "norm": "linf", "epsilon": 4 / 255, "step_size": 1 / 255, "iterations": 10,
           "restarts": 1, "loss": "ce", "accuracy": 0.5, "f1": 0.5, "auroc_max_softmax_clean_vs_adversarial": 0.6}
    model = {"clean": {"accuracy": 0.9, "f1": 0.9, "aurc": {}}, "risk_coverage": {}, "sweeps": [row], "checks": []}
    return {"workdir": "RUN", "step": 6, "data": {"num_images": 4, "source": "test"}, "models": {"D": model}}


@pytest.mark.parametrize("error", [ENOSPC, EROFS])
def test_the_attack_report_names_the_path(tmp_path, monkeypatch, error):
    assert set(robustness_report.write(str(tmp_path), _attack_results())) == {"table", "sweeps", "risk_coverage"}
    monkeypatch.setattr(storage.os, "replace", _failing_replace(error))
    with pytest.raises(StorageError, match=rf"writing {tmp_path}/robustness.md failed: {error.strerror}"):
        robustness_report.write(str(tmp_path), _attack_results())


def test_the_metric_log_names_its_path(tmp_path, monkeypatch):
    from cfjax.metric_writer import MetricWriter

    writer = MetricWriter(str(tmp_path))
    try:
        writer.scalars(1, {"loss": 1.0})
        real_open = open

        def full_disk_open(path, mode="r", *args, **kwargs):
            if str(path).endswith("metrics.jsonl") and "a" in mode:
                raise ENOSPC
            return real_open(path, mode, *args, **kwargs)

        monkeypatch.setattr("builtins.open", full_disk_open)
        with pytest.raises(StorageError, match=rf"writing {tmp_path}/metrics.jsonl failed: No space left"):
            writer.scalars(2, {"loss": 0.5})
    finally:
        monkeypatch.undo()
        writer.close()


def _write_failure() -> CheckpointError:
    try:
        raise ENOSPC
    except OSError as cause:
        try:
            raise CheckpointError("writing checkpoint 6 in RUN/checkpoints failed (OSError: ...)") from cause
        except CheckpointError as error:
            return error


@pytest.mark.parametrize("error, code", [
    (ConfigError("config.seed=-1: must be ..."), 2),
    (DataError("cannot read image a.png"), 2),
    (CheckpointError("the checkpoints in RUN were written by an incompatible config"), 2),
    (CheckpointError("no checkpoint in RUN/checkpoints: train the run first"), 2),
    (_write_failure(), 3),
    (CheckpointFault("no readable checkpoint in RUN/checkpoints: checkpoint 6 could not be read"), 3),
    (StorageError("writing RUN/results.json failed: No space left on device"), 3),
    (ENOSPC, 3),
    (train.NonFiniteError("non-finite values at step 3"), 1),
    (train.Preempted("SIGINT received", signal.SIGINT), 130),
    (train.Preempted("SIGTERM received", signal.SIGTERM), 143),
    (interrupts.Interrupted(signal.SIGINT), 130),
    (RuntimeError("a bug"), None),  # shown with its traceback
    (SystemExit(2), None),
])
def test_each_error_type_has_one_exit_code(error, code):
    assert exit_codes.exit_code(error) == code


def test_the_exit_code_table_of_the_docs_matches_the_cli(repo_root):
    page = (repo_root / "docs" / "reliability.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(cells[1].strip(" `")) for cells in (line.split("|") for line in page.splitlines())
                  if len(cells) > 2 and cells[1].strip(" `").isdigit()}
    assert documented == {0, exit_codes.NON_FINITE, exit_codes.USAGE_ERROR, exit_codes.FAULT,
                          exit_codes.SIGNAL_BASE + signal.SIGINT, exit_codes.SIGNAL_BASE + signal.SIGTERM}


def test_a_signal_outside_the_loop_raises_and_is_remembered(monkeypatch):
    """With the CLI's handlers: outside `deferred()` a signal raises Interrupted at once, and should that
    exception be swallowed, `check()` raises it again; inside, it is only recorded for the loop."""
    monkeypatch.setattr(interrupts, "_received", [])
    monkeypatch.setattr(interrupts, "_state", {"installed": True, "deferring": 0})
    interrupts.check()  # nothing received yet
    with pytest.raises(interrupts.Interrupted, match="SIGINT received"):
        interrupts._handler(signal.SIGINT, None)
    with pytest.raises(interrupts.Interrupted) as caught:
        interrupts.check()  # as if a callback had swallowed the first one
    assert caught.value.signum == signal.SIGINT and exit_codes.exit_code(caught.value) == 130
    interrupts._received.clear()
    with interrupts.deferred() as received:
        interrupts._handler(signal.SIGTERM, None)  # recorded, not raised
        assert received == [signal.SIGTERM]
