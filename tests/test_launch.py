"""`cfjax.launch` without starting processes: each process's environment, the flags, exit codes
(the runs themselves: tests/test_multihost.py)."""

import pytest

from cfjax import cluster, launch


def test_each_process_learns_the_coordinator_its_id_and_its_devices():
    env = launch.process_env(1, 2, 1234, 3, environ={"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --a=b"})
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:1234"
    assert (env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"]) == ("2", "1")
    assert env["XLA_FLAGS"] == "--a=b --xla_force_host_platform_device_count=3"  # the launcher's count replaces
    assert env["JAX_PLATFORMS"] == "cpu"


def test_flags_before_the_double_dash_are_the_launchers():
    args, rest = launch.parse(["--processes=3", "--", "--config=configs/cracks.py:tiny", "--processes=9"])
    assert args.processes == 3 and args.devices_per_process == 1
    assert rest == ["--config=configs/cracks.py:tiny", "--processes=9"]
    with pytest.raises(SystemExit):
        launch.parse(["--processes=2"])  # nothing to run


def test_a_signal_becomes_the_shells_exit_code():
    assert launch.exit_code(-9) == 137 and launch.exit_code(-15) == 143 and launch.exit_code(2) == 2


def test_free_port_is_a_port():
    assert 0 < launch.free_port() < 65536


# Process 0 fails only once process 1 is dead and the launcher has had time to see it (a marker file, then a
# pause), so which failure comes first does not depend on how fast a loaded machine starts the two.
FAKE_PROCESS = """
import os, signal, sys, time
marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "process_1_dies")
if os.environ["JAX_PROCESS_ID"] == "1":
    print("cfjax: config x", flush=True)
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
while not os.path.exists(marker):
    time.sleep(0.05)
time.sleep(1.0)
print("cfjax: error: a barrier timed out", flush=True)
print("F1130 15:54:19.572463   32727 client.h:80] Terminating process because the JAX distributed service", flush=True)
print("*** Check failure stack trace: ***", flush=True)
print("    @     0x7fd17a440634  absl::LogMessage::SendToLog()", flush=True)
os.abort()
"""


@pytest.mark.parametrize("full_output", [False, True])
def test_a_dead_peers_fatal_dump_becomes_one_note(tmp_path, monkeypatch, capfd, full_output):
    """Process 1 is SIGKILLed; process 0 prints a cfjax line, then a JAX-like C++ fatal dump, and aborts: only
    the cfjax line and one note reach the output (all of it with --full_output)."""
    (tmp_path / "fake_process.py").write_text(FAKE_PROCESS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    code = launch.Launch([], processes=2, module="fake_process", settle_s=20, full_output=full_output).wait()
    out, err = capfd.readouterr()
    assert code == 137  # the first failure's
    assert "cfjax: error: a barrier timed out" in out and "[process 1] cfjax: config x" in out
    assert "cfjax.launch: process 1 ended with exit code 137" in err
    if full_output:
        assert "client.h:80] Terminating process" in out and "lines of JAX's fatal-error dump" not in err
    else:
        assert "client.h" not in out and "Check failure" not in out
        assert "cfjax.launch: process 0 ended with exit code 134; 3 lines of JAX's fatal-error dump left out" in err


def test_the_process_rank_comes_from_the_launchers_environment():
    assert cluster.process_rank({}) is None
    assert cluster.process_rank({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # one task: not several
    assert cluster.process_rank({"SLURM_PROCID": "3", "SLURM_NTASKS": "8"}) == (3, 8, "SLURM_PROCID")
    assert cluster.process_rank({"JAX_PROCESS_ID": "1", "JAX_NUM_PROCESSES": "2"}) == (1, 2, "JAX_PROCESS_ID")
    assert cluster.process_rank({"OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "2"}) is None
