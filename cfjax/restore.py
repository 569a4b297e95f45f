"""Loading a trained run back for analysis: its networks and parameters, onto the devices present."""

import dataclasses
import os
from typing import Any

import jax
import ml_collections

from cfjax import checkpoint, parallel, tasks
from cfjax.config_validation import validate_config


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A restored run. For a GAN, `networks` and `params` are (G, D) pairs (G's EMA weights); for a
    baseline, the `supervised.SupervisedModel` and its parameters."""

    config: ml_collections.ConfigDict
    kind: str
    networks: Any
    params: Any
    step: int
    mesh: Any


def _require_checkpoints(workdir: str) -> None:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory) or not os.listdir(directory):
        raise checkpoint.CheckpointError(
            f"no checkpoint in {os.path.abspath(directory)}: train the run first, e.g. "
            f"python -m cfjax.main --config=... --workdir={workdir}")


def saved_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a run was trained with, as saved beside its newest (or the given) checkpoint."""
    _require_checkpoints(workdir)
    checkpointer = checkpoint.Checkpointer(workdir)
    try:
        return ml_collections.ConfigDict(checkpointer.saved_config(step))
    finally:
        checkpointer.close()


def load_run(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> LoadedRun:
    """Restore the newest (or the given) checkpoint of `workdir`, which `config` must have written
    (fields that only steer evaluation and explanation may differ); CheckpointError otherwise."""
    validate_config(config)
    _require_checkpoints(workdir)
    mesh = parallel.make_mesh()
    task = tasks.make_task(config, mesh)
    checkpointer = checkpoint.Checkpointer(workdir)
    try:
        checkpointer.check_compatible(config, step)
        abstract = checkpoint.abstract_like(task.init_state(jax.random.PRNGKey(config.seed)))
        state = checkpointer.restore(abstract, step)
    finally:
        checkpointer.close()
    kind = tasks.model_kind(config)
    if kind == "gan":
        networks = (task.models.generator, task.models.discriminator)
        params = (state.g_ema_params, state.d_params)
    else:
        networks, params = task.model, state.params
    return LoadedRun(config, kind, networks, params, int(state.step), mesh)
