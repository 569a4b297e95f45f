"""Test set-up: two forced CPU devices (multi-device paths run everywhere) and a persistent
compilation cache, so repeated CI runs skip most XLA compiles."""

import contextlib
import importlib
import os
import pathlib
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
# The CLI's flags (cfjax/cli/startup.py), so that the tests and the commands they start share compiled programs
# in the cache, and a test's collectives survive a loaded machine as a command's do.
from cfjax.cli.startup import with_patient_cpu_collectives  # noqa: E402  (imports no JAX)

os.environ["XLA_FLAGS"] = with_patient_cpu_collectives(os.environ["XLA_FLAGS"])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path.home() / ".cache" / "cfjax" / "jax_compilation_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "configs"))

import cracks  # noqa: E402


@pytest.fixture
def tiny_config() -> ml_collections.ConfigDict:
    """The `:tiny` variant: seconds per run on a 2-core CPU."""
    return cracks.get_config("tiny")


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


def pytest_report_header(config):
    return f"jax {jax.__version__}, devices: {jax.devices()}, compilation cache: {_CACHE}"


SHARED_DATA = REPO.parent / "shared" / "data"


def shared_dataset(name: str) -> pathlib.Path:
    """A real dataset beside the repository (../shared/data); the test skips, saying so, if it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not present on this machine")
    return path


@contextlib.contextmanager
def experiment_script(name: str):
    """A script of experiments/ imported as a module: the harnesses the preemption, live-workdir and
    multi-process tests share with the scripts that measure the figures in docs/."""
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "experiments"))
