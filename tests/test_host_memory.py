"""cfjax.host_memory: glibc's malloc thresholds set for the CLI's process, the user's own choice respected."""

import os
import subprocess
import sys

import pytest

from cfjax import host_memory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")


def _in_fresh_process(env: dict) -> str:
    code = "from cfjax import host_memory; print(host_memory.keep_freed_memory())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@linux_only
def test_takes_effect_on_glibc(monkeypatch):
    for name in host_memory._USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert _in_fresh_process(dict(os.environ)) == "True"


@linux_only
@pytest.mark.parametrize("variable, value", [("MALLOC_TOP_PAD_", "0"), ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                             ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])
def test_a_users_own_setting_is_left_alone(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert host_memory.keep_freed_memory() is False


def test_elsewhere_it_does_nothing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert host_memory.keep_freed_memory() is False


def test_the_command_line_sets_it_before_jax_starts(monkeypatch):
    """cli.startup.cpu_defaults (run before JAX's import) is where the CLI calls it."""
    from cfjax.cli import startup

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    startup.cpu_defaults(16)
    assert calls == [True]
