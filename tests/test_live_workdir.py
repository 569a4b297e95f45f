"""A live workdir: one training run (the command line, in a subprocess) with others around it. A second
writer is refused at once, naming the first, and the first finishes bit-identical to an undisturbed run;
two readers polling `cfjax.restore` for the whole run never crash and never disturb it (the run ends
bit-identical). Every subprocess runs under a timeout, so these tests cannot hang."""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import experiment_script

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

STEPS = 30  # a checkpoint per step: the readers have 30 to read, each deleted by the next
TIMEOUT_S = 600


def command(workdir, *extra) -> list[str]:
    """The tiny config, checkpointing every step and keeping only the newest (a reader's checkpoint can be
    deleted under it at any moment), logging every step; evaluation and figures only at the end."""
    return [sys.executable, "-m", "cfjax.main", "--config=configs/cracks.py:tiny", f"--config.num_steps={STEPS}",
            "--config.checkpoint_every=1", "--config.keep_checkpoints=1", "--config.log_every=1",
            "--config.eval_every=1000", "--config.image_every=1000", f"--workdir={workdir}", *extra]


@pytest.fixture(scope="module")
def harness():
    with experiment_script("preemption") as script:
        yield script


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, repo_root):
    workdir = tmp_path_factory.mktemp("undisturbed") / "run"
    subprocess.run(command(workdir), cwd=repo_root, check=True, capture_output=True, timeout=TIMEOUT_S)
    return str(workdir)


def _start_trainer(workdir, repo_root, log):
    trainer = subprocess.Popen(command(workdir), cwd=repo_root, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + TIMEOUT_S
    while not os.path.isdir(os.path.join(workdir, "checkpoints", "1")) and trainer.poll() is None:
        assert time.time() < deadline, "the trainer wrote no checkpoint"
        time.sleep(0.05)
    assert trainer.poll() is None, "the trainer ended before its first checkpoint"
    return trainer


def _finish(process, log_path) -> None:
    try:
        assert process.wait(timeout=TIMEOUT_S) == 0, open(log_path).read()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()


def test_a_second_writer_is_refused_at_once_naming_the_first(tmp_path, repo_root, undisturbed, harness):
    workdir, log_path = tmp_path / "run", tmp_path / "trainer.log"
    with open(log_path, "w") as log:
        trainer = _start_trainer(workdir, repo_root, log)
        try:
            refusals = []
            for extra in ([], ["--config.seed=1"]):  # the same command, and another run on the same workdir
                start = time.time()
                second = subprocess.run(command(workdir, *extra), cwd=repo_root, capture_output=True, text=True,
                                        timeout=120)
                refusals.append((second, time.time() - start))
            assert trainer.poll() is None, "the first run should still be training"
        finally:
            _finish(trainer, log_path)
    for second, seconds in refusals:
        print(f"refused in {seconds:.1f} s: {second.stderr.strip()}")
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert lines[0].startswith(f"cfjax: error: {workdir} is in use by another training run (pid {trainer.pid} on "
                                   "host ")
        assert "command: " in lines[0] and "cfjax.main" in lines[0] and "started " in lines[0]
        assert "resuming" not in second.stdout
    assert harness.differences(undisturbed, str(workdir)) == []


def test_two_live_readers_never_disturb_the_trainer(tmp_path, repo_root, undisturbed, harness):
    workdir, log_path, stop = tmp_path / "run", tmp_path / "trainer.log", tmp_path / "stop"
    outs = [tmp_path / f"reader{i}.json" for i in range(2)]
    with open(log_path, "w") as log:
        start = time.time()
        trainer = subprocess.Popen(command(workdir), cwd=repo_root, stdout=log, stderr=subprocess.STDOUT)
        readers = [subprocess.Popen([sys.executable, str(repo_root / "tests" / "live_reader.py"), str(workdir),
                                     str(out), str(stop)], cwd=repo_root, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for out in outs]
        try:
            _finish(trainer, log_path)
            trained_s = time.time() - start
        finally:
            stop.touch()
            reader_logs = []
            for reader in readers:
                try:
                    reader_logs.append(reader.communicate(timeout=120)[0])
                except subprocess.TimeoutExpired:
                    reader.kill()
                    reader_logs.append(reader.communicate()[0])
    records = [json.loads(out.read_text()) for out in outs]
    for reader, text, record in zip(readers, reader_logs, records, strict=True):
        summary = {k: v for k, v in record.items() if k not in ("poll_s", "steps")}
        print(f"trainer {trained_s:.1f} s; reader: {summary}; steps read {sorted(set(record['steps']))}; "
              f"poll seconds median {sorted(record['poll_s'])[len(record['poll_s']) // 2]:.2f}")
        assert reader.returncode == 0, text[-3000:]
        assert record["tracebacks"] == []
        assert record["successes"] >= 3
        assert "Traceback" not in text, text[-3000:]
    assert "Traceback" not in log_path.read_text()
    assert harness.differences(undisturbed, str(workdir)) == []
