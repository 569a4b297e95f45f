"""Storage faults: a failed checkpoint write (full disk, read-only folder, an asynchronous commit that
fails) raises a CheckpointError that says what happened and never touches the checkpoints already
there; a damaged checkpoint (a truncated copy) is set aside and the newest readable one resumed."""

import errno
import shutil

import chex
import jax
import orbax.checkpoint as ocp
import pytest

from cfjax import checkpoint, kinds, parallel, train

# Tiny training runs with failing or damaged checkpoints.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted tiny run: checkpoints 3 and 6."""
    import cracks

    config = cracks.get_config("tiny")
    workdir = tmp_path_factory.mktemp("straight")
    train.train_and_evaluate(config, str(workdir))
    return config, workdir


def _state(workdir, config):
    kind = kinds.make_kind(config, parallel.make_mesh())
    saved = checkpoint.Checkpointer(str(workdir))
    try:
        return saved.all_steps(), jax.device_get(saved.restore(checkpoint.abstract_like(kind.init_state(
            jax.random.PRNGKey(config.seed)))))
    finally:
        saved.close()


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   OSError(errno.EROFS, "Read-only file system")])
def test_a_failed_write_says_so_and_keeps_the_previous_checkpoint(straight, tmp_path, monkeypatch, error):
    config, reference = straight
    original = ocp.CheckpointManager.save

    def failing(manager, step, *args, **kwargs):
        if step == 6:
            raise error
        return original(manager, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing)
    with pytest.raises(checkpoint.CheckpointError, match=rf"writing checkpoint 6 in .* failed \(OSError: .*"
                                                         rf"{error.strerror}\); the checkpoints already there "
                                                         rf"\(\[3\]\) are untouched"):
        train.train_and_evaluate(config, str(tmp_path))
    assert _state(tmp_path, config)[0] == [3]
    if error.errno == errno.EROFS:
        return  # the resume below is the same for both causes
    monkeypatch.setattr(ocp.CheckpointManager, "save", original)
    train.train_and_evaluate(config, str(tmp_path))  # the same command, once there is room again
    steps, state = _state(tmp_path, config)
    assert steps == [3, 6]
    chex.assert_trees_all_equal(state, _state(reference, config)[1])


def test_a_failed_asynchronous_commit_is_reported(straight, tmp_path, monkeypatch):
    config, _ = straight
    original = ocp.CheckpointManager.wait_until_finished
    calls = []

    def failing(manager):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return original(manager)

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", failing)
    # Orbax waits for the previous write inside the next save, so either call may report it.
    with pytest.raises(checkpoint.CheckpointError, match=r"(writing checkpoint \d+|finishing a checkpoint write) in "
                                                         r".* failed \(OSError: .*Input/output error\)"):
        train.train_and_evaluate(config, str(tmp_path))
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", original)
    assert train.train_and_evaluate(config, str(tmp_path))["step"] == config.num_steps


def _damage(workdir, step):
    for data_file in (workdir / "checkpoints" / str(step) / "state").rglob("d/*"):
        data_file.write_bytes(data_file.read_bytes()[:10])


def test_a_damaged_checkpoint_is_set_aside_and_the_previous_one_resumed(straight, tmp_path, capsys):
    config, reference = straight
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir)
    (workdir / "results.json").unlink()
    _damage(workdir, 6)  # as a copy cut short would leave it
    train.train_and_evaluate(config, str(workdir))
    out = capsys.readouterr().out
    assert "cfjax: warning: checkpoint 6 could not be read" in out and "resuming from step 3" in out
    assert (workdir / "checkpoints_damaged" / "6" / "state").is_dir()  # kept, not deleted
    steps, state = _state(workdir, config)
    assert steps == [3, 6]
    chex.assert_trees_all_equal(state, _state(reference, config)[1])


def test_no_readable_checkpoint_is_one_clear_error(straight, tmp_path):
    config, reference = straight
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir)
    (workdir / "results.json").unlink()
    for step in (3, 6):
        _damage(workdir, step)
    with pytest.raises(checkpoint.CheckpointError, match=r"no readable checkpoint in .*checkpoint 6 could not be "
                                                         r"read .*; checkpoint 3 could not be read"):
        train.train_and_evaluate(config, str(workdir))


# --- readers (cfjax.restore, --mode=explain|attack): damaged checkpoints, and nothing changed on disk ---

def _truncate_data(step_dir):
    for data_file in (step_dir / "state").rglob("d/*"):
        data_file.write_bytes(data_file.read_bytes()[:10])


def _truncate_metadata(step_dir):
    metadata = step_dir / "metadata" / "metadata"
    metadata.write_bytes(metadata.read_bytes()[:10])


READER_DAMAGE = {"truncated data files": _truncate_data, "truncated metadata": _truncate_metadata,
                 "deleted state folder": lambda step_dir: shutil.rmtree(step_dir / "state")}


def _snapshot(workdir) -> list:
    """Every path under `workdir` with its size and modification time: what a reader must leave alone."""
    return sorted((str(p.relative_to(workdir)), p.stat().st_size, p.stat().st_mtime_ns) for p in workdir.rglob("*"))


@pytest.fixture
def copy_of_straight(straight, tmp_path):
    config, reference = straight
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir)
    return workdir


@pytest.mark.parametrize("damage", READER_DAMAGE)
def test_a_reader_falls_back_from_a_damaged_checkpoint_and_changes_nothing(straight, copy_of_straight, damage):
    import cfjax

    workdir = copy_of_straight
    READER_DAMAGE[damage](workdir / "checkpoints" / "6")
    before = _snapshot(workdir)
    run = cfjax.restore(str(workdir))
    assert run.step == 3
    chex.assert_trees_all_equal(jax.device_get(run.params), jax.device_get(cfjax.restore(str(straight[1]), 3).params))
    assert _snapshot(workdir) == before  # nothing moved aside, created or deleted


@pytest.mark.parametrize("damage", READER_DAMAGE)
def test_no_readable_checkpoint_is_one_clear_error_for_readers(copy_of_straight, damage):
    import cfjax

    workdir = copy_of_straight
    for step in (3, 6):
        READER_DAMAGE[damage](workdir / "checkpoints" / str(step))
    before = _snapshot(workdir)
    with pytest.raises(checkpoint.CheckpointError, match=rf"no readable checkpoint in {workdir}/checkpoints: "
                                                         r"checkpoint 6 could not be read \(.*\); "
                                                         r"checkpoint 3 could not be read \("):
        cfjax.restore(str(workdir))
    assert _snapshot(workdir) == before


def test_a_reader_leaves_a_save_in_flight_alone(copy_of_straight):
    """A trainer's save in progress is a temporary folder; a reader must neither clean it up nor read it."""
    import cfjax

    workdir = copy_of_straight
    in_flight = workdir / "checkpoints" / "7.orbax-checkpoint-tmp-1234567890"
    shutil.copytree(workdir / "checkpoints" / "6", in_flight)
    before = _snapshot(workdir)
    assert cfjax.restore(str(workdir)).step == 6
    assert _snapshot(workdir) == before


# The command line with the asynchronous commit of checkpoint 6 failing, as a disk error would make it.
FAILING_COMMIT_MAIN = '''
import errno, sys
from orbax.checkpoint._src.path import atomicity

original = atomicity.AtomicRenameTemporaryPath.finalize

async def failing(self, *args, **kwargs):
    if str(self.get_final()).rstrip("/").endswith("/6"):
        raise OSError(errno.EIO, "Input/output error")
    return await original(self, *args, **kwargs)

atomicity.AtomicRenameTemporaryPath.finalize = failing
from absl import app
from cfjax import main
app.run(main.main, flags_parser=main.parse_flags)
'''


@pytest.mark.subprocess
def test_a_failed_write_on_the_command_line_is_one_line_without_orbax_logs(tmp_path, repo_root):
    """Orbax logs the failure of its background commit with tracebacks (~70 lines); cfjax reports it as
    one line, and shows orbax's own logs only when asked to with --verbosity."""
    import subprocess
    import sys

    script = tmp_path / "failing_main.py"
    script.write_text(FAILING_COMMIT_MAIN)
    outputs = {}
    for verbosity in ([], ["--verbosity=0"]):
        command = [sys.executable, str(script), "--config=configs/cracks.py:tiny",
                   f"--workdir={tmp_path / str(len(outputs))}", *verbosity]
        outputs[bool(verbosity)] = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=600)
    quiet = outputs[False]
    assert quiet.returncode == 3  # a fault of the machine, not a usage error (docs/reliability.md)
    lines = [line for line in quiet.stderr.splitlines() if line.strip() and not line.startswith("train:")]  # (bar)
    assert len(lines) == 1, quiet.stderr[-3000:]
    assert lines[0].startswith("cfjax: error: ") and "failed (OSError: [Errno 5] Input/output error)" in lines[0]
    verbose = outputs[True]
    assert verbose.returncode == 3 and "Traceback" in verbose.stderr and "orbax" in verbose.stderr

# --- storage faults outside checkpoint writes -------------------------------------------------------------


def test_a_full_disk_while_writing_image_grids_is_one_line_and_the_run_resumes(straight, tmp_path, monkeypatch):
    config, reference = straight
    from cfjax import storage
    from cfjax.errors import StorageError

    original = storage.write_bytes_atomic

    def full_for_grids(path, data):
        if path.endswith("class0.png") and "step_000006" in path:
            raise StorageError(f"writing {path} failed: No space left on device")
        return original(path, data)

    monkeypatch.setattr(storage, "write_bytes_atomic", full_for_grids)
    with pytest.raises(StorageError, match=r"writing .*images/step_000006_class0.png failed: No space left"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()
    monkeypatch.setattr(storage, "write_bytes_atomic", original)
    assert train.train_and_evaluate(config, str(tmp_path))["step"] == config.num_steps  # the same command


def test_a_truncated_results_json_is_recomputed_with_a_warning(straight, tmp_path, capsys):
    """Before atomic writes, a results.json cut short made every rerun of a finished run fail with a
    JSONDecodeError; now the rerun evaluates the newest checkpoint again."""
    import json

    config, reference = straight
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir)
    whole = json.loads((workdir / "results.json").read_text())
    text = (workdir / "results.json").read_text()
    (workdir / "results.json").write_text(text[: len(text) // 2])
    results = train.train_and_evaluate(config, str(workdir))
    assert "cannot be read (cut short?); evaluating checkpoint 6 again" in capsys.readouterr().out
    assert results["test"] == whole["test"] and results["step"] == whole["step"] == config.num_steps
    assert json.loads((workdir / "results.json").read_text())["test"] == whole["test"]
    assert _state(workdir, config)[0] == [3, 6]  # no new checkpoint


@pytest.mark.parametrize("case", ["file in the way", "read-only"])
def test_an_unwritable_workdir_is_refused_before_any_work(straight, tmp_path, monkeypatch, case):
    """A new run, and a finished run extended by more steps. Tests run as root, where chmod does not stop
    writes: a read-only file system is simulated by monkeypatching, a file in the way is real."""
    from cfjax import storage
    from cfjax.errors import StorageError

    config, reference = straight
    if case == "file in the way":
        blocker = tmp_path / "run"
        blocker.write_text("a file")
        with pytest.raises(StorageError, match=rf"writing into folder {blocker} failed: it exists and is a file"):
            train.train_and_evaluate(config, str(blocker))
        return
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir)
    before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(storage.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(train.kinds, "make_kind", lambda *a: pytest.fail("work started before the check"))
    for target, steps in ((tmp_path / "new", config.num_steps), (workdir, config.num_steps + 3)):
        longer = config.copy_and_resolve_references()
        longer.num_steps = steps
        with pytest.raises(StorageError, match=rf"writing into folder {target} failed: Read-only file system"):
            train.train_and_evaluate(longer, str(target))
    assert not (tmp_path / "new").exists()
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before


@pytest.mark.parametrize("mode", ["explain", "attack"])
def test_an_unwritable_output_folder_is_refused_before_the_work(straight, tmp_path, monkeypatch, mode):
    """Before: 75 s of explain or 355 s of attacks on a read-only run, then a traceback."""
    from cfjax import evaluate
    from cfjax.errors import StorageError
    from cfjax.explain.run import explain
    from cfjax.robustness.run import attack

    config, reference = straight
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    monkeypatch.setattr(evaluate.SplitEvaluator, "run", lambda *a: pytest.fail("work started before the check"))
    run_mode = explain if mode == "explain" else attack
    with pytest.raises(StorageError, match=rf"writing into folder {blocker} failed: it exists and is a file"):
        run_mode(config, str(reference), out_dir=str(blocker))
