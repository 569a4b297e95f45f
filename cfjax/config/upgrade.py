"""Saved configs of older runs brought up to today's fields, once, where they are loaded.

A run's checkpoint stores the config it was trained with. Fields added to cfjax since are filled here
with the value such a run implicitly had (what the code did while the field did not exist), and renamed
fields are moved, so that everything after `upgrade_config` reads plain fields and an old run still
restores, resumes, and is explained or attacked as it was trained. This is the only table of them.
"""

from typing import Any

import ml_collections

# Old name -> new name. Moved before ADDED_FIELDS fills what is still missing.
RENAMED_FIELDS: dict[str, str] = {
    # The counterfactual map's settings were split over `eval` and `explain`.
    "eval.saliency_reduce": "saliency.reduce",
    "explain.blur_radius": "saliency.blur_radius",
    "eval.contrast_radius": "saliency.contrast_radius",
}

_OPTIMIZER = {"eps": 1e-8, "warmup_steps": 0}

# Fields added after runs were already being saved, with the value those older runs implicitly had.
# Sections that did not exist (explain, attack, adversarial_training, saliency) get the settings they
# had when they were introduced: an old run was trained without adversarial training, and is explained
# and attacked with the settings of the first cfjax that could.
ADDED_FIELDS: dict[str, Any] = {
    "model": "gan",
    "on_non_finite": "stop",
    "compute_dtype": "float32",
    "remat": False,
    "data.data_dir": "",
    "data.view": "patches",
    "data.fit": "resize",
    "data.colour_jitter": 0.0,
    "data.balance_classes": False,  # older runs read every example once per epoch
    "data.num_workers": 2,
    "data.prefetch": 4,
    **{f"optimizer.{network}.{field}": value
       for network in ("generator", "discriminator") for field, value in _OPTIMIZER.items()},
    "saliency.reduce": "mean",
    "saliency.blur_radius": 0,
    "saliency.contrast_radius": 2,
    "saliency.views": "identity",  # the map of the image alone, before views were averaged
    "adversarial_training.epsilon": 0.0,
    "adversarial_training.step_size": 2.0 / 255,
    "adversarial_training.num_steps": 7,
    "adversarial_training.norm": "linf",
    "adversarial_training.warmup_steps": 0,
    "adversarial_training.also_fake": False,  # runs before the robust GAN: no PGD example was "fake"
    "adversarial_training.fake_weight_scale": 1.0,  # the detector's PGD examples weighed as generated images
    "explain.fixed_fraction": 0.5,
    "explain.top_k_percent": 0.0,
    "explain.ig_steps": 16,
    "explain.histogram_bins": 1024,
    "explain.max_figures": 24,
    "explain.contact_rows": 8,
    # Tolerant scores only add numbers; the thin-mask rows were not there before.
    "explain.tolerance": 2,
    "explain.centerline_tolerance": 4,
    "explain.thin_nms": False,
    "explain.thin_reduce": "",
    "attack.paper_step_sizes_255": (0.5, 1.0, 2.0, 4.0, 8.0),
    "attack.paper_iterations": 10,
    "attack.linf_epsilons_255": (1.0, 2.0, 4.0, 8.0, 16.0),
    "attack.l2_epsilons": (0.1, 0.25, 0.5, 1.0),
    "attack.iterations": 10,
    "attack.restarts": 1,
    "attack.check_epsilon_255": 4.0,
    "attack.strong_iterations": 20,
    "attack.strong_restarts": 3,
    "attack.adaptive_weight": 0.0,
    # Runs attacked before the ensemble existed were checked with the longer PGD alone.
    "attack.ensemble": False,
    "attack.strong": "pgd",
    "attack.ensemble_iterations": 100,
    "attack.ensemble_targets": 9,
    "attack.ensemble_queries": 5000,
    "attack.ensemble_epsilons_255": (),  # every L-inf budget, as before the field existed
    "attack.max_examples": 0,
    "attack.models": (),
}


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Move renamed fields and fill added ones in place (also in a locked config); returns `config`.
    A complete, current config is left as it is."""
    with config.unlocked():
        for old, new in RENAMED_FIELDS.items():
            if _has(config, old):
                value = _pop(config, old)
                if not _has(config, new):
                    _put(config, new, value)
        for field, value in ADDED_FIELDS.items():
            if not _has(config, field):
                _put(config, field, value)
    return config


def upgrade_dict(config: dict) -> dict:
    """`upgrade_config` of a config as plain nested dicts (as checkpoints store it), on a copy."""
    return upgrade_config(ml_collections.ConfigDict(config)).to_dict()


def _parent(config: ml_collections.ConfigDict, field: str, *, create: bool = False):
    *path, last = field.split(".")
    node = config
    for part in path:
        if part not in node:
            if not create:
                return None, last
            node[part] = ml_collections.ConfigDict()
        node = node[part]
    return node, last


def _has(config: ml_collections.ConfigDict, field: str) -> bool:
    node, last = _parent(config, field)
    return node is not None and last in node


def _pop(config: ml_collections.ConfigDict, field: str) -> Any:
    node, last = _parent(config, field)
    value = node[last]
    del node[last]
    return value


def _put(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
    node, last = _parent(config, field, create=True)
    node[last] = value


def recorded_value(recorded: dict, section: str, field: str) -> Any:
    """`field` of a config section as a report recorded it (explain.json's settings), where a report older
    than the field counts as having had the value ADDED_FIELDS gives it."""
    return recorded.get(field, ADDED_FIELDS.get(f"{section}.{field}"))
