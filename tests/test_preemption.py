"""Preemption: a real training run (the command line, in a subprocess) SIGKILLed at 5 random moments,
some while a checkpoint is being written, and restarted each time, ends bit-identical to an
uninterrupted run (state, optimizer states, key, metrics, results); SIGTERM and SIGINT save the step
in progress before the run stops. The harness is experiments/preemption.py (20 kills for docs/reliability.md)."""

import json
import os
import signal

import pytest
from conftest import experiment_script

from cfjax import checkpoint, train
from cfjax.data import pipeline


@pytest.fixture
def harness():
    with experiment_script("preemption") as script:
        yield script


@pytest.mark.slow
@pytest.mark.subprocess
def test_three_sigkills_resume_bit_identically(harness, tmp_path):
    """Also the determinism check: two runs of one config and seed, in separate processes, give the
    same bits (the straight run and the killed-and-restarted one)."""
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
    harness.subprocess.run(harness.command(straight, 12), cwd=harness.REPO, check=True, capture_output=True)
    events = harness.interrupted_run(interrupted, num_steps=12, kills=3, seed=0)
    killed = [e for e in events if e.get("killed")]
    print("kills:", events)
    assert len(killed) == 3
    assert harness.checkpoints_lost(events) == 0
    assert events[-1]["final"] and events[-1]["resumed_from"] is not None
    assert harness.differences(straight, interrupted) == []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_the_current_step_then_stop(tmp_path, tiny_config, monkeypatch, signum):
    tiny_config.checkpoint_every = 1000  # only the signal makes this save
    original = pipeline.TrainBatches.__next__

    def signal_during_step_3(batches):
        if batches.next_index() == 2:
            os.kill(os.getpid(), signum)  # arrives while step 3 runs
        return original(batches)

    monkeypatch.setattr(pipeline.TrainBatches, "__next__", signal_during_step_3)
    with pytest.raises(train.Preempted, match=rf"{signum.name} received: stopped after step 3 and saved it") as info:
        train.train_and_evaluate(tiny_config, str(tmp_path))
    assert info.value.signum == signum
    saved = checkpoint.Checkpointer(str(tmp_path))
    assert saved.all_steps() == [3]
    saved.close()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.setattr(pipeline.TrainBatches, "__next__", original)
    results = train.train_and_evaluate(tiny_config, str(tmp_path))  # the same call resumes from step 3
    assert results["step"] == tiny_config.num_steps
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
            if "train/d_loss" in line] == [2, 4, 6]
