"""The config `--mode=explain|attack` runs with: the trained run's own, so a run is explained and
attacked as it was trained, whatever the config files say today."""

import ml_collections

from cfjax.checkpoint import Checkpointer
from cfjax.config.compare import with_evaluation_settings
from cfjax.config.upgrade import upgrade_config
from cfjax.saved_runs import saved_config


def for_saved_run(workdir: str, config: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
    """The config saved with the newest checkpoint of `workdir` (upgraded). With `config`, its evaluation
    sections (eval, saliency, explain, attack) and data location replace the saved ones, after any
    structural field where it differs from the run is refused (CheckpointError naming each)."""
    saved = saved_config(workdir)
    if config is None:
        return saved
    checkpointer = Checkpointer(workdir, read_only=True)
    try:
        checkpointer.check_compatible(upgrade_config(config.copy_and_resolve_references()))
    finally:
        checkpointer.close()
    return with_evaluation_settings(saved, config)
