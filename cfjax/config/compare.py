"""Which fields of a saved run's config a new config may change: on resume, and when a trained run is
explained or attacked. Both sides are compared after `upgrade_config`, so an older run still matches."""

import ml_collections

from cfjax.config.upgrade import upgrade_dict

# Sections that only steer evaluation, explanation and attacks: `--mode=explain|attack` takes them from
# the command line's config, and a run may change them at any time.
EVALUATION_SECTIONS = ("eval", "explain", "attack", "saliency")
# Where this machine keeps the data and how it reads it: also taken from the command line's config.
MACHINE_FIELDS = ("data.data_dir", "data.num_workers", "data.prefetch")

# Fields a resumed run may change: how long it trains, how often it logs, evaluates and saves, how it
# runs, and the evaluation sections. Every other field shapes the arrays or the computation, so a workdir
# refuses any change to it.
RESUMABLE_FIELDS = frozenset(
    {"name", "num_steps", "log_every", "image_every", "eval_every", "checkpoint_every", "keep_checkpoints",
     "on_non_finite", "remat", "compute_dtype", *EVALUATION_SECTIONS, *MACHINE_FIELDS}
)


def flatten_dict(tree: dict, sep: str = ".", prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1} (with `sep` between the levels): a config as field names."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_dict(value, sep, f"{prefix}{key}{sep}"))
        else:
            flat[prefix + key] = value
    return flat


def _normalise(value):
    """JSON turns tuples into lists; compare them alike."""
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def _resumable(field: str, current: dict) -> bool:
    if field == "num_steps":
        # The schedule's shape depends on num_steps unless it is constant.
        return all(opt["schedule"] == "constant" for opt in current["optimizer"].values())
    return field.split(".")[0] in RESUMABLE_FIELDS or field in RESUMABLE_FIELDS


def config_differences(saved: dict, current: dict, *, saved_as: str = "checkpoint",
                       current_as: str = "config") -> list[str]:
    """Fields (other than the resumable ones) whose values differ between a saved config and this one,
    both upgraded to today's fields; each line names the two sides as `saved_as` and `current_as`."""
    return _differences(saved, current, lambda field, upgraded: _resumable(field, upgraded), saved_as, current_as)


def analysis_differences(saved: dict, current: dict, *, saved_as: str = "record",
                         current_as: str = "command") -> list[str]:
    """Fields whose values differ between the config an explanation or attack ran with and this one: the
    training fields as `config_differences` compares them, and every field of the evaluation sections."""
    def may_differ(field: str, upgraded: dict) -> bool:
        return field.split(".")[0] not in EVALUATION_SECTIONS and _resumable(field, upgraded)

    return _differences(saved, current, may_differ, saved_as, current_as)


def _differences(saved: dict, current: dict, may_differ, saved_as: str, current_as: str) -> list[str]:
    saved, current = upgrade_dict(saved), upgrade_dict(current)
    old = {k: _normalise(v) for k, v in flatten_dict(saved).items()}
    new = {k: _normalise(v) for k, v in flatten_dict(current).items()}
    diffs = []
    for field in sorted(set(old) | set(new)):
        before, after = old.get(field, "<absent>"), new.get(field, "<absent>")
        if before != after and not may_differ(field, current):
            diffs.append(f"{field}: {saved_as} has {before!r}, {current_as} has {after!r}")
    return diffs


def with_evaluation_settings(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict
                             ) -> ml_collections.ConfigDict:
    """The saved run's config with the evaluation sections and machine fields of `config` (both
    upgraded): what `--mode=explain|attack --config=...` runs with. Structural differences are the
    caller's to refuse (`checkpoint.Checkpointer.check_compatible`)."""
    merged = ml_collections.ConfigDict(upgrade_dict(saved.to_dict()))
    config = ml_collections.ConfigDict(upgrade_dict(config.to_dict()))
    for section in EVALUATION_SECTIONS:
        merged[section] = config[section]
    for field in MACHINE_FIELDS:
        section, name = field.split(".")
        merged[section][name] = config[section][name]
    return merged
