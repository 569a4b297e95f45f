"""Data parallelism over every device: a ('data',) mesh, batch sharded, state replicated.

`jax.jit` with `NamedSharding` is the current successor of `jax.pmap`; the same code runs on one
CPU, N forced host devices, a GPU, a TPU slice, and several hosts after
`jax.distributed.initialize()` (each host then feeds its own slice of the global batch).
"""

import json

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cfjax.errors import ConfigError


def make_mesh(devices=None) -> Mesh:
    """A one-axis mesh named 'data' over all (or the given) devices."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices, ("data",))


def local_mesh() -> Mesh:
    """A 'data' mesh over this process's own devices: what it computes there needs no other process (no
    cross-process collective), so it cannot wait on one. The mesh of every restored run (evaluation modes,
    `cfjax.restore`); the same as `make_mesh()` in a single-process run."""
    return make_mesh(jax.local_devices())


def mesh_processes(mesh: Mesh) -> list[int]:
    """The processes whose devices the mesh spans, in order."""
    return sorted({device.process_index for device in mesh.devices.flat})


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the 'data' axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (parameters, optimizer state, keys)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "config.batch_size") -> None:
    """Fail early, naming the field, when the global batch cannot be split evenly."""
    devices = mesh.devices.size
    if batch_size % devices:
        raise ConfigError(
            f"{field}={batch_size} is not divisible by the {devices} devices in use "
            f"({jax.default_backend()}); choose a multiple of {devices}."
        )
    hosts = len(mesh_processes(mesh))
    if batch_size % hosts:
        raise ConfigError(f"{field}={batch_size} is not divisible by the {hosts} hosts.")


def host_slice(global_batch_size: int, mesh: Mesh | None = None) -> slice:
    """This host's share of a global batch over `mesh` (default: every process): the whole batch on a single
    host, or on a mesh of this process's own devices (`local_mesh`)."""
    hosts = list(range(jax.process_count())) if mesh is None else mesh_processes(mesh)
    per_host = global_batch_size // len(hosts)
    start = hosts.index(jax.process_index()) * per_host
    return slice(start, start + per_host)


def shard_batch(host_batch: dict, mesh: Mesh) -> dict:
    """Place this host's part of the batch onto the mesh as one global array per field."""
    sharding = batch_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in host_batch.items()
    }


def allgather_json(value) -> list:
    """Every process's `value` (JSON-serialisable), in process order; a collective: all processes call it.
    On a single process, [value] without any communication."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.int32(len(data)))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:len(data)] = data
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, lengths)]


# How long a process waits for the others' stop flags at a step before giving up (a backstop: a dead peer is
# normally detected sooner by the coordinator's heartbeat, and a slow first compile must fit in it).
AGREE_TIMEOUT_S = 900


def agreed_stop_signal(index: int, local: int) -> int:
    """The stop signal every process acts on after loop iteration `index`: `local` (0: none) on a single
    process; with several, the first non-zero one in process order, so a SIGTERM that reached one process
    stops them all at the same step (each checkpoint save is a collective). The flags travel through the
    coordinator's key-value store, not the devices: the host does not wait for the step in flight."""
    if jax.process_count() == 1:
        return local
    from jax._src import distributed  # the client jax.distributed.initialize connected

    client = distributed.global_state.client
    me, count = jax.process_index(), jax.process_count()
    client.key_value_set(f"cfjax/stop/{index}/{me}", str(local))
    flags = [local if other == me else
             int(client.blocking_key_value_get(f"cfjax/stop/{index}/{other}", AGREE_TIMEOUT_S * 1000))
             for other in range(count)]
    if index >= 2:
        try:
            client.key_value_delete(f"cfjax/stop/{index - 2}/{me}")  # every process has read it by now
        except Exception:  # noqa: BLE001 (a tidy-up only)
            pass
    return next((flag for flag in flags if flag), 0)


def connect_collectives() -> None:
    """Right after `jax.distributed.initialize`: wait for every process at the coordinator, then run one tiny
    collective, so the processes open their collective connections together. On CPUs gloo connects lazily at
    the first collective and gives up after 30 s; a process still compiling or restoring while another waits
    there (a loaded machine) failed with "Gloo context initialization failed: ... Connect timeout"."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed
    from jax.experimental import multihost_utils

    distributed.global_state.client.wait_at_barrier("cfjax_connect", AGREE_TIMEOUT_S * 1000)
    multihost_utils.sync_global_devices("cfjax_connect")


# The key under which process 0 of a multi-process evaluation (--mode=explain|attack|predict) leaves how it ended.
OUTCOME_KEY = "cfjax/outcome"


def share_outcome(code: int, line: str) -> None:
    """Process 0: tell the processes waiting in `wait_for_outcome` its exit code and its last line (through the
    coordinator's key-value store: no device, no collective)."""
    from jax._src import distributed

    distributed.global_state.client.key_value_set(OUTCOME_KEY, f"{code}\n{line}")


def wait_for_outcome(poll_s: float = 1.0) -> tuple[int, str]:
    """Another process than 0: (exit code, line) once process 0 has shared them. Waits as long as process 0
    works (a long evaluation is no hang); should process 0 die, the coordinator it hosts goes with it and
    the wait ends with a ConnectionError (or JAX ends this process itself). A stop signal is raised within
    `poll_s`."""
    from jax._src import distributed

    from cfjax import interrupts

    client = distributed.global_state.client
    while True:
        interrupts.check()
        try:
            value = client.blocking_key_value_get(OUTCOME_KEY, int(poll_s * 1000))
        except Exception as error:  # noqa: BLE001 (jaxlib raises one runtime error type for every failure)
            if "DEADLINE_EXCEEDED" in str(error) or "deadline" in str(error).lower():
                continue
            raise ConnectionError(f"lost process 0 of this run while waiting for it "
                                  f"({type(error).__name__}: {str(error).strip().splitlines()[0][:200]})") from error
        code, _, line = value.partition("\n")
        return int(code), line
