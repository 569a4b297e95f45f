"""cfjax.cli.startup: the arguments of jax.distributed.initialize from the flags, else the environment the
launcher sets (inconsistent settings are a usage error that names the flag); the XLA flags set before JAX
starts."""

import subprocess
import sys

import jax
import pytest

from cfjax.cli import startup
from cfjax.cli.startup import distributed_settings
from cfjax.errors import ConfigError

LAUNCHED = {"JAX_COORDINATOR_ADDRESS": "localhost:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}


def test_one_process_unless_asked():
    assert distributed_settings(environ={}) is None
    assert distributed_settings(num_processes=1, process_id=0, environ={}) is None
    assert distributed_settings(detect=True, environ={}) == {}  # JAX finds the cluster itself


def test_flags_win_over_the_environment_the_launcher_sets():
    assert distributed_settings(environ=LAUNCHED) == {"coordinator_address": "localhost:1234", "num_processes": 2,
                                                      "process_id": 1}
    ours = distributed_settings(process_id=0, heartbeat_timeout_s=30,
                                environ={**LAUNCHED, "CFJAX_HEARTBEAT_TIMEOUT_S": "5"})
    assert ours == {"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 0,
                    "heartbeat_timeout_seconds": 30}
    from_environment = distributed_settings(environ={**LAUNCHED, "CFJAX_HEARTBEAT_TIMEOUT_S": "5"})
    assert from_environment["heartbeat_timeout_seconds"] == 5
    assert distributed_settings(environ={"JAX_COORDINATOR_ADDRESS": ""}) is None  # empty is unset


@pytest.mark.parametrize("settings, environ, message", [
    ({"num_processes": 2}, {}, "--num_processes/--process_id need --coordinator_address"),
    ({"coordinator_address": "h:1"}, {}, "--coordinator_address needs --num_processes and --process_id"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, {},
     "--process_id=2 must be below --num_processes=2"),
    ({}, {**LAUNCHED, "JAX_NUM_PROCESSES": "two"}, r"\$JAX_NUM_PROCESSES='two' is not a valid int"),
])
def test_inconsistent_settings_name_what_is_wrong(settings, environ, message):
    with pytest.raises(ConfigError, match=message):
        distributed_settings(**settings, environ=environ)


def test_collectives_wait_an_hour_where_the_jaxlib_has_the_flag():
    flag = f"--{startup.COLLECTIVE_TIMEOUT_FLAG}=3600"
    devices = "--xla_force_host_platform_device_count=2"
    assert startup.with_patient_cpu_collectives(devices, "0.10.2") == f"{devices} {flag}"
    assert startup.with_patient_cpu_collectives("", "0.11.0.dev20261201") == flag
    assert startup.with_patient_cpu_collectives(devices, "0.8.1") == devices  # older: XLA would refuse the flag
    mine = f"--{startup.COLLECTIVE_TIMEOUT_FLAG}=60"
    assert startup.with_patient_cpu_collectives(mine, "0.10.2") == mine  # the user's setting stays


PROBE = """
import os
os.environ.pop("XLA_FLAGS", None)
from cfjax.cli import startup
startup.cpu_defaults(4)
import jax, jax.numpy as jnp
mesh = jax.make_mesh((jax.device_count(),), ("d",))
x = jax.device_put(jnp.arange(8.0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d")))
print(os.environ["XLA_FLAGS"], "|", float(jax.jit(jnp.sum)(x)))
"""


@pytest.mark.subprocess
def test_the_installed_jaxlib_accepts_the_flags_the_command_line_sets():
    """XLA aborts a process at start on a flag it does not know: the flags cpu_defaults sets must be known to
    the jaxlib installed here, and a cross-device reduction runs under them."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags, total = proc.stdout.strip().rsplit("|", 1)
    assert float(total) == 28.0
    if jax.device_count() > 1:  # (the command line forces a device per core: as many as this machine has)
        assert "--xla_force_host_platform_device_count=" in flags
    assert (startup.COLLECTIVE_TIMEOUT_FLAG in flags) == (startup.with_patient_cpu_collectives("") != "")
