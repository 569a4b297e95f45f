"""Loading a trained run back for analysis: its networks and inference parameters only (no optimizer
state), onto whatever devices are present. A run saved on 8 TPU cores loads on one CPU and back.

In a multi-process JAX program each process loads onto its own devices only (`parallel.local_mesh`) and reads
the checkpoint alone (`Checkpointer(read_only=True)` enters no cross-process barrier): whatever a loaded run
computes involves no other process, so no process can wait on another that took a different path."""

import dataclasses
import hashlib
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from cfjax import checkpoint, kinds, parallel
from cfjax.config.upgrade import upgrade_config
from cfjax.config.validation import validate_config


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A restored run: its kind (networks and what they offer, `cfjax.kinds`), and the parameters its
    inference uses (for a GAN the (G, D) pair, G's EMA weights)."""

    config: ml_collections.ConfigDict
    kind: kinds.RunKind
    params: Any
    step: int
    mesh: Any
    class_names: tuple[str, ...] | None = None  # the training dataset's, where the checkpoint records them


def params_digest(params: Any) -> str:
    """A short fingerprint of a run's inference parameters. Two trainings of one config, seed and step (the
    same run trained again on another machine) share every name and number but not their weights: an
    analysis that reuses another's output checks this, not the names."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if isinstance(leaf, jax.Array) and leaf.sharding.is_fully_replicated:
            leaf = leaf.addressable_shards[0].data  # this process's full copy, also where others hold one too
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def require_checkpoints(workdir: str) -> None:
    """CheckpointError, with the command that makes one, when `workdir` holds no checkpoint."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory) or not os.listdir(directory):
        raise checkpoint.CheckpointError(
            f"no checkpoint in {os.path.abspath(directory)}: train the run first, e.g. "
            f"python -m cfjax.main --config=... --workdir={workdir}")


def saved_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a run was trained with, as saved beside its newest (or the given) checkpoint, upgraded
    to today's fields."""
    require_checkpoints(workdir)
    checkpointer = checkpoint.Checkpointer(workdir, read_only=True)
    try:
        return upgrade_config(ml_collections.ConfigDict(checkpointer.saved_config(step)))
    finally:
        checkpointer.close()


def inference_target(kind: kinds.RunKind) -> dict:
    """{field: abstract subtree} of the training state's inference fields (the rest, optimizer states, the
    raw generator next to its EMA, the training key, stays on disk): shapes, dtypes and replicated
    shardings on the current mesh, from `eval_shape` (nothing is computed or allocated)."""
    abstract = jax.eval_shape(kind.init_state, jax.random.PRNGKey(kind.config.seed))
    return {name: getattr(abstract, name) for name in kind.inference_fields}


def load_run(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> LoadedRun:
    """Restore the newest readable (or the given) checkpoint of `workdir`, which `config` must have written
    (fields that only steer evaluation and explanation may differ); CheckpointError otherwise. Read-only:
    safe while a run trains there (`checkpoint.Checkpointer.read_newest`)."""
    validate_config(config)
    require_checkpoints(workdir)
    mesh = parallel.local_mesh()
    kind = kinds.make_kind(config, mesh)
    checkpointer = checkpoint.Checkpointer(workdir, read_only=True)  # never disturbs a run training there
    try:
        read_step, fields = checkpointer.read_compatible_fields(config, inference_target(kind), step)
        names = checkpointer.saved_class_names(read_step)
    finally:
        checkpointer.close()
    names = names if names is not None and len(names) == config.num_classes else None
    return LoadedRun(config, kind, kind.inference_params(fields), int(fields["step"]), mesh, names)
