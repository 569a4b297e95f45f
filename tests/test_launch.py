"""`cfjax.launch` without starting processes: each process's environment, the flags, exit codes
(the runs themselves: tests/test_multihost.py)."""

import pytest

from cfjax import launch


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
