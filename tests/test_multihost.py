"""Multi-process runs on one machine (JAX's multi-controller runtime, gloo collectives over loopback),
through `python -m cfjax.launch`: 2 processes x 1 device train bit-identically to 1 process x 2 devices;
a SIGKILLed process stops the run within a bounded time and a restart resumes bit-exactly; SIGTERM to one
process saves and stops both; explain, attack and predict in 2 processes give the 1-process outputs, each file
written once; a bad config fails both with one line.
The harness is experiments/multihost.py (10 kills for docs/multihost.md). Every subprocess has a timeout."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import experiment_script

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

STEPS = 8


@pytest.fixture(scope="module")
def harness():
    with experiment_script("multihost") as script:
        yield script


@pytest.fixture(scope="module")
def straight(harness, tmp_path_factory):
    """The reference: one process with two devices."""
    workdir = str(tmp_path_factory.mktemp("runs") / "1x2")
    assert harness.run(workdir, STEPS, 1, workdir + ".log") == 0, open(workdir + ".log").read()[-3000:]
    return workdir


@pytest.fixture(scope="module")
def two_processes(harness, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("runs") / "2x1")
    assert harness.run(workdir, STEPS, 2, workdir + ".log") == 0, open(workdir + ".log").read()[-3000:]
    return workdir


def launch(harness, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfjax.launch", "--processes=2", "--", *args], cwd=harness.REPO,
                          env=harness.environ(), capture_output=True, text=True, timeout=timeout)


def test_two_processes_train_bit_identically_to_two_devices(harness, straight, two_processes):
    assert harness.preemption.differences(straight, two_processes) == []
    log = open(two_processes + ".log").read()
    assert log.count("Finished step 8") == 1  # the report, results.json and metrics: process 0 only
    results = json.load(open(os.path.join(two_processes, "results.json")))
    assert results["step"] == STEPS and results["devices"].startswith("2 x")
    lines = open(os.path.join(two_processes, "metrics.jsonl")).read().splitlines()
    assert len(lines) == len({json.loads(line)["step"] for line in lines if "train/d_loss" in line}) + 1  # + test/


def test_a_sigkill_of_one_process_during_a_save_stops_the_run_and_it_resumes_bit_identically(harness, straight,
                                                                                             tmp_path):
    """One kill (at step 4, seed 9), while a checkpoint is being written after one was committed: the case a
    collective commit must survive. Kills at other moments and many of them: tests/test_preemption.py in one
    process, experiments/multihost.py's 10 in two."""
    interrupted = str(tmp_path / "interrupted")
    events = harness.interrupted_run(interrupted, STEPS, kills=1, seed=9, during_save=lambda kill: True)
    print("events:", events)
    killed = [e for e in events if e.get("killed")]
    assert len(killed) == 1
    for event in killed:
        assert event["launcher_exit"] not in (0, "hang")
        assert event["stop_s"] < 3 * harness.HEARTBEAT_S + 20  # bounded: SIGTERM from the launcher, heartbeat
    assert harness.preemption.checkpoints_lost(events) == 0
    assert events[-1]["returncode"] == 0 and events[-1]["resumed_from"] is not None
    assert harness.preemption.differences(straight, interrupted) == []


def test_sigterm_to_one_process_saves_the_step_and_stops_both(harness, straight, tmp_path):
    workdir = str(tmp_path / "term")
    log = workdir + ".log"
    with open(log, "w") as out:
        launcher = subprocess.Popen(harness.command(workdir, STEPS, 2, ("--config.checkpoint_every=1000",)),
                                    cwd=harness.REPO, stdout=out, stderr=subprocess.STDOUT, env=harness.environ())
        deadline = time.monotonic() + 300
        while harness.preemption._logged_step(workdir) < 3 and launcher.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(harness.children(launcher.pid)[1], signal.SIGTERM)
        code = launcher.wait(timeout=120)
    text = open(log).read()
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert "SIGTERM received: stopped after step" in text  # process 1, which the signal reached
    assert "SIGTERM received by another process: stopped after step" in text  # process 0
    saved = harness.preemption.committed_steps(workdir)
    assert len(saved) == 1 and 3 <= saved[0] < STEPS
    assert harness.run(workdir, STEPS, 2, log, ("--config.checkpoint_every=1000",)) == 0
    # The same run as the reference but for checkpoint_every, which changes no number.
    assert harness.preemption.differences(straight, workdir) == []


@pytest.mark.parametrize("mode", ["explain", "attack", "predict"])
def test_evaluation_modes_in_two_processes_equal_one_process_and_write_each_file_once(harness, two_processes,
                                                                                      tmp_path, mode):
    """Process 0 alone restores and computes on its own device (no collective: it cannot wait on process 1,
    the cause of a hang), writes every file once; process 1 waits and ends as process 0 did."""
    single, double = tmp_path / "one", tmp_path / "two"
    flags = lambda out: harness.evaluation_flags(mode, two_processes, STEPS, out, tmp_path)  # noqa: E731
    one = subprocess.run([sys.executable, "-m", "cfjax.main", *flags(single)], cwd=harness.REPO,
                         env=harness.environ(1), capture_output=True, text=True, timeout=400)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    two = launch(harness, flags(double), timeout=400)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert harness.NUMBERS[mode](double) == harness.NUMBERS[mode](single)
    listing = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*"))  # noqa: E731
    assert listing(double) == listing(single)  # the same files, no temporary file left
    waiting = [line for line in two.stdout.splitlines() if line.startswith("[process 1] cfjax:")]
    assert waiting == [f"[process 1] cfjax: --mode={mode} runs in process 0 of 2, on its own devices; process 1 "
                       "waits for it"]  # process 1 restored, computed and wrote nothing
    assert two.stdout.count("cfjax: wrote ") == 1


def test_a_failing_evaluation_ends_both_processes_with_process_0s_line(harness, tmp_path):
    """An evaluation that fails in process 0 (here: no checkpoint) ends process 1 with the same line and code."""
    os.makedirs(tmp_path / "empty" / "checkpoints")
    proc = launch(harness, [f"--workdir={tmp_path / 'empty'}", "--mode=explain"], timeout=180)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line.removeprefix("[process 1] ") for line in proc.stdout.splitlines() if "cfjax: error: " in line]
    assert len(errors) == 2 and errors[0] == errors[1] and "no checkpoint in" in errors[0], proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout


RESTORE_PROBE = """
import os, sys
import jax, numpy as np
if "JAX_COORDINATOR_ADDRESS" in os.environ:
    jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], int(os.environ["JAX_NUM_PROCESSES"]),
                               int(os.environ["JAX_PROCESS_ID"]))
import cfjax
run = cfjax.restore(sys.argv[1])
size = run.config.data.image_size
images = np.random.default_rng(0).random((5, size, size, 3), np.float32)
if jax.process_index() == 1:
    run.classify(images[:2])  # other calls than process 0's, in another order: nothing is shared
np.savez(os.path.join(sys.argv[2], f"out{jax.process_index()}_of_{jax.process_count()}.npz"),
         p_fake=run.p_fake(images), saliency=run.saliency(images), classify=run.classify(images))
"""


def test_restore_in_each_of_two_processes_equals_one_process(harness, two_processes, tmp_path, monkeypatch, capfd):
    """`cfjax.restore` in a multi-process program: each process restores onto its own device and reads the
    checkpoint alone (no barrier), so the processes need not call it, or anything after it, in step."""
    from cfjax import launch as launcher

    (tmp_path / "restore_probe.py").write_text(RESTORE_PROBE)
    env = {**harness.environ(1), "PYTHONPATH": f"{tmp_path}{os.pathsep}{harness.environ()['PYTHONPATH']}"}
    one = subprocess.run([sys.executable, "-m", "restore_probe", two_processes, str(tmp_path)], cwd=harness.REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("XLA_FLAGS")
    run = launcher.Launch([two_processes, str(tmp_path)], processes=2, module="restore_probe", settle_s=5, grace_s=5)
    finished = threading.Thread(target=run.wait, daemon=True)
    finished.start()
    finished.join(timeout=300)
    if finished.is_alive():  # a hang: fail, leaving no process behind
        run.signal_all(signal.SIGKILL)
    assert not finished.is_alive() and [p.returncode for p in run.procs] == [0, 0], capfd.readouterr()
    reference = np.load(tmp_path / "out0_of_1.npz")
    for index in range(2):
        restored = np.load(tmp_path / f"out{index}_of_2.npz")
        for name in reference.files:
            np.testing.assert_array_equal(restored[name], reference[name])


@pytest.mark.parametrize("flag, message", [
    ("--config.batch_size=7", "cfjax: error: "),
    ("--config.data.name=crack_segmentation/sut", "cfjax: error: "),
])
def test_a_bad_config_or_missing_dataset_fails_both_processes_with_one_line(harness, tmp_path, flag, message):
    proc = launch(harness, ["--config=configs/cracks.py:tiny", f"--workdir={tmp_path / 'run'}", flag,
                            f"--config.data.data_dir={tmp_path / 'no_data'}"], timeout=180)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line.removeprefix("[process 1] ") for line in proc.stdout.splitlines() if message in line]
    assert len(errors) == 2 and errors[0] == errors[1], proc.stdout[-3000:]  # the same one line from each
    assert "Traceback" not in proc.stdout


@pytest.mark.parametrize("environ", [{"JAX_PROCESS_ID": "{i}", "JAX_NUM_PROCESSES": "2"},
                                     {"SLURM_PROCID": "{i}", "SLURM_NTASKS": "4"},
                                     {"OMPI_COMM_WORLD_RANK": "{i}", "OMPI_COMM_WORLD_SIZE": "2"}])
def test_prepare_runs_in_process_0_only(harness, tmp_path, environ):
    """`srun python -m cfjax.data.prepare ...` (one process per task): process 0 builds the dataset, every other
    process says so in one line and ends at once (0), touching nothing; the job step ends with process 0."""
    def prepare(index: int) -> subprocess.CompletedProcess:
        env = {**harness.environ(), **{name: value.format(i=index) for name, value in environ.items()}}
        return subprocess.run([sys.executable, "-m", "cfjax.data.prepare", "--dataset=crack_segmentation/sut",
                               f"--manual_dir={tmp_path / 'nowhere'}", f"--data_dir={tmp_path / 'data'}"],
                              cwd=harness.REPO, env=env, capture_output=True, text=True, timeout=120)

    other = prepare(1)
    assert other.returncode == 0 and not (tmp_path / "data").exists(), other.stderr[-2000:]
    assert other.stdout.strip().splitlines()[-1].startswith("cfjax.data.prepare: process 1 of ")
    assert "process 0 prepares the dataset for all of them" in other.stdout
    first = prepare(0)  # does the work: here, reports the missing files
    assert first.returncode == 2 and "does not exist" in first.stderr, first.stderr[-2000:]
