"""cfjax.cli.startup.distributed_settings: the arguments of jax.distributed.initialize from the flags, else
the environment the launcher sets; inconsistent settings are a usage error that names the flag."""

import pytest

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
