"""Faults seen from the command line: a storage fault is one line with exit code 3 (not 2, which stays
for usage errors), and Ctrl-C during start-up, before the training loop takes over the signals, stops
the command with exit code 130, the documented line, no traceback and nothing half-written."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ENV = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}


def _start(args, repo_root) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cfjax.main", *args], cwd=repo_root, env={**os.environ, **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(args, repo_root) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfjax.main", *args], cwd=repo_root, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_workdir_that_is_a_file_is_a_fault_with_exit_code_3(tmp_path, repo_root):
    blocker = tmp_path / "run"
    blocker.write_text("a file, not a folder")
    proc = _run(["--config=configs/cracks.py:tiny", f"--workdir={blocker}"], repo_root)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"cfjax: error: writing into folder {blocker} failed: it exists and is a file, not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr and blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize("delay_s", [0.0, 1.5])
def test_ctrl_c_during_start_up_stops_cleanly(tmp_path, repo_root, delay_s):
    """SIGINT right after the first line (JAX started; the model being built and compiled) or a moment
    later: before, a KeyboardInterrupt traceback from inside JAX, or a run that went on."""
    workdir = tmp_path / "run"
    proc = _start(["--config=configs/cracks.py:tiny", f"--workdir={workdir}"], repo_root)
    try:
        first = proc.stdout.readline()
        assert first.startswith("cfjax: config cracks_tiny"), first
        time.sleep(delay_s)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert ("cfjax: SIGINT received: stopped before finishing" in err
            or "cfjax: SIGINT received: stopped after step 1 and saved it" in err), err[-2000:]
    assert not (workdir / "results.json").exists()
    leftovers = [p.name for p in workdir.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers  # nothing half-written
