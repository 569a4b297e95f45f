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
    if batch_size % jax.process_count():
        raise ConfigError(f"{field}={batch_size} is not divisible by the {jax.process_count()} hosts.")


def host_slice(global_batch_size: int) -> slice:
    """This host's share of a global batch (the whole batch on a single host)."""
    per_host = global_batch_size // jax.process_count()
    start = jax.process_index() * per_host
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
