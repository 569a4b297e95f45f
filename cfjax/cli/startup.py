"""What the CLI does before and as JAX starts: CPU device and cache defaults (which must precede JAX's
import), and joining a multi-process job (`jax.distributed.initialize`, docs/multihost.md)."""

import os
from collections.abc import Mapping

from cfjax.errors import ConfigError


def cpu_defaults(batch_size: int) -> None:
    """Before JAX starts: one XLA device per CPU core (up to 8, dividing the batch), a persistent
    compilation cache, unless the user set either, freed host memory kept in the process
    (`host_memory`), and patient collectives (`with_patient_cpu_collectives`). On a 2-core CPU two
    devices ran a GAN step ~1.4x faster than one; devices of a GPU or TPU are unaffected."""
    from cfjax import host_memory

    host_memory.keep_freed_memory()
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in xla_flags:
        cores = min(os.cpu_count() or 1, 8)
        devices = max(d for d in range(1, cores + 1) if batch_size % d == 0)
        xla_flags = f"{xla_flags} --xla_force_host_platform_device_count={devices}".strip()
    os.environ["XLA_FLAGS"] = with_patient_cpu_collectives(xla_flags)
    cache = os.path.join(os.path.expanduser("~"), ".cache", "cfjax", "jax_compilation_cache")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)


# XLA:CPU aborts the process (SIGABRT, "Termination timeout ... of 40 seconds exceeded") when one device's
# thread reaches a collective 40 s after another. On a CPU those devices are threads of one process, so that
# wait is a busy machine (a run under `nice` beside other jobs), not a hang: it killed a fruit attack after 48
# minutes of work. An hour instead, where the installed jaxlib has the flag (XLA refuses unknown flags).
COLLECTIVE_TIMEOUT_FLAG = "xla_cpu_collective_call_terminate_timeout_seconds"
COLLECTIVE_TIMEOUT_S = 3600
_FIRST_JAXLIB_WITH_THE_FLAG = (0, 10)  # (the first checked: 0.10.2 has it)


def with_patient_cpu_collectives(xla_flags: str, jaxlib_version: str | None = None) -> str:
    """`xla_flags` with XLA:CPU's collective termination timeout at COLLECTIVE_TIMEOUT_S, unless the user set
    it or the jaxlib (`jaxlib_version`, default the installed one) predates it."""
    if COLLECTIVE_TIMEOUT_FLAG in xla_flags:
        return xla_flags
    if jaxlib_version is None:
        from importlib import metadata

        try:
            jaxlib_version = metadata.version("jaxlib")
        except metadata.PackageNotFoundError:
            return xla_flags
    major_minor = tuple(int(part) if part.isdigit() else -1 for part in jaxlib_version.split(".")[:2])
    if major_minor < _FIRST_JAXLIB_WITH_THE_FLAG:
        return xla_flags
    return f"{xla_flags} --{COLLECTIVE_TIMEOUT_FLAG}={COLLECTIVE_TIMEOUT_S}".strip()


def distributed_settings(*, coordinator_address: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None, heartbeat_timeout_s: int | None = None,
                         detect: bool = False, environ: Mapping[str, str] = os.environ) -> dict | None:
    """The arguments of `jax.distributed.initialize`: each from its flag (the keyword arguments), else the
    environment (the launcher `cfjax.launch` sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID); None for a single-process run. `detect` (`--jax_distributed`) alone gives {}: JAX
    detects a Cloud TPU, SLURM or Open MPI cluster itself. Inconsistent settings are a ConfigError."""
    def value(given, name, kind):
        if given is not None:
            return given
        text = environ.get(name)
        if text in (None, ""):
            return None
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"${name}={text!r} is not a valid {kind.__name__}") from None

    address = value(coordinator_address, "JAX_COORDINATOR_ADDRESS", str)
    settings = {"coordinator_address": address, "num_processes": value(num_processes, "JAX_NUM_PROCESSES", int),
                "process_id": value(process_id, "JAX_PROCESS_ID", int)}
    if address is None and not detect:
        if settings["num_processes"] not in (None, 1) or settings["process_id"] not in (None, 0):
            raise ConfigError("--num_processes/--process_id need --coordinator_address (or $JAX_COORDINATOR_ADDRESS) "
                              "or --jax_distributed")
        return None
    if address is not None and None in (settings["num_processes"], settings["process_id"]) and not detect:
        raise ConfigError("--coordinator_address needs --num_processes and --process_id (or $JAX_NUM_PROCESSES and "
                          "$JAX_PROCESS_ID), or --jax_distributed to detect them")
    if settings["num_processes"] is not None and settings["process_id"] is not None \
            and settings["process_id"] >= settings["num_processes"]:
        raise ConfigError(f"--process_id={settings['process_id']} must be below "
                          f"--num_processes={settings['num_processes']}")
    heartbeat = value(heartbeat_timeout_s, "CFJAX_HEARTBEAT_TIMEOUT_S", int)
    if heartbeat is not None:
        settings["heartbeat_timeout_seconds"] = heartbeat
    return {name: v for name, v in settings.items() if v is not None}


def initialize_distributed(settings: dict | None) -> None:
    """`jax.distributed.initialize(**settings)` for a multi-process run (nothing for None: one process). On
    CPUs the processes exchange collectives through gloo (TCP)."""
    if settings is None:
        return
    import jax

    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # (the default since JAX 0.5; explicit)
    jax.distributed.initialize(**settings)
    from cfjax import interrupts, parallel

    # initialize() starts JAX's preemption notifier, whose own SIGTERM handler would swallow the signal;
    # cfjax's handlers take it back, and the processes agree on stop signals themselves (parallel.py).
    interrupts.install()
    interrupts.check()  # a signal that arrived while JAX connected
    parallel.connect_collectives()
