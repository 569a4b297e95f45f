"""Data parallelism over every device: a ('data',) mesh, batch sharded, state replicated.

`jax.jit` with `NamedSharding` is the current successor of `jax.pmap`; the same code runs on one
CPU, N forced host devices, a GPU, a TPU slice, and several hosts after
`jax.distributed.initialize()` (each host then feeds its own slice of the global batch).
"""

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
