"""Prepare a dataset once from the files a user placed in a folder; training then reads it back.

    python -m cfjax.data.prepare --dataset=crack_segmentation/sut --manual_dir=PATH [--data_dir=PATH]
    python -m cfjax.data.prepare --dataset=crack_segmentation/folder --manual_dir=PATH --crack_value=255
    python -m cfjax.data.prepare --dataset=fruit_defects/apples --manual_dir=PATH
    python -m cfjax.data.prepare --dataset=class_folders --manual_dir=PATH

Writes TFDS array_record files (no TensorFlow needed) and prints what it wrote: examples per split
and class, patch counts and the crack-pixel share. A dataset already prepared is kept unless
--overwrite is given, and a rebuild replaces it only once it has succeeded.
"""

import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

from absl import app, flags, logging

from cfjax import cluster
from cfjax.errors import DataError

# Flags: (name, config field it overrides or None, definer, default, help). Defined only when run as a
# command, so importing this module (tests, notebooks) leaves absl's global flags alone.
_FLAGS = (
    ("dataset", None, "string", None, "NAME/CONFIG, e.g. crack_segmentation/sut."),
    ("manual_dir", None, "string", None, "The folder holding the downloaded files."),
    ("data_dir", None, "string", None, "Where prepared datasets live (default ~/tensorflow_datasets)."),
    ("overwrite", None, "bool", False, "Rebuild a dataset that is already prepared."),
    ("config_name", None, "string", None, "Name for a customised config (default: CONFIG_custom)."),
    ("skip_bad_files", None, "bool", False, "Skip and count unreadable images instead of failing on the first."),
    ("mask_threshold", "mask_threshold", "integer", None, "Crack where mask > this value."),
    ("crack_value", "crack_value", "integer", None, "Crack where mask == this value (label maps)."),
    ("patch_size", "patch_size", "integer", None, "Side of the patch view's crops."),
    ("min_crack_fraction", "min_crack_fraction", "float", None, "Least mask share of a crack patch."),
    ("margin", "margin", "integer", None, "Crack-free border required around a no-crack patch."),
    ("group_pattern", "group_pattern", "string", None, "Regex whose first group names a file's source photo."),
    ("images", "image_dirs", "string", None, "crack_segmentation/folder: the images subfolder."),
    ("masks", "mask_dirs", "string", None, "crack_segmentation/folder: the masks subfolder."),
    ("class_names", "class_names", "list", None, "class_folders: the class folders in label order; the "
                                                  "first is the normal class (counterfactual target)."),
)
FLAG_OF_FIELD = {field: name for name, field, *_ in _FLAGS if field}
_TUPLE_FIELDS = ("image_dirs", "mask_dirs", "class_names")


_BOUNDS = {"mask_threshold": {"lower_bound": 0, "upper_bound": 254},  # damage is a level above it
           "crack_value": {"lower_bound": 0, "upper_bound": 255}}


def _define_flags() -> None:
    for name, _, kind, default, help_text in _FLAGS:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text, **_BOUNDS.get(name, {}))
    flags.mark_flags_as_required(["dataset", "manual_dir"])


def builder_config(dataset: str, overrides: dict, custom_name: str | None = None):
    """The builder class and its config object, with `overrides` applied to the config's fields.

    TFDS keeps one folder per config name, so a customised config gets its own name
    (`custom_name`, default CONFIG_custom) and training reads it as NAME/that name."""
    from cfjax.data.builders import BUILDERS

    name, _, config_name = dataset.partition("/")
    if name not in BUILDERS:
        raise DataError(f"--dataset={dataset!r}: unknown dataset {name!r}; choose one of {sorted(BUILDERS)}")
    builder_class = BUILDERS[name]
    configs = {c.name: c for c in builder_class.BUILDER_CONFIGS}
    config_name = config_name or builder_class.BUILDER_CONFIGS[0].name
    if config_name not in configs:
        raise DataError(f"--dataset={dataset!r}: {name} has no config {config_name!r}; choose one of {sorted(configs)}")
    config = configs[config_name]
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise DataError(f"--{FLAG_OF_FIELD.get(unknown[0], unknown[0])} does not apply to {name}/{config_name}")
    if overrides:
        if "crack_value" in overrides and "mask_threshold" not in overrides:
            overrides["mask_threshold"] = None
        config = dataclasses.replace(config, **overrides)
        config = dataclasses.replace(config, name=custom_name or f"{config.name}_custom",
                                     description=f"{config.description} Overrides: {overrides}")
    elif custom_name:
        config = dataclasses.replace(config, name=custom_name)
    if (overrides or custom_name) and config.name in configs:
        raise DataError(f"--config_name={config.name!r} is a built-in config of {name}; choose another name")
    return builder_class, config


def prepare(dataset: str, manual_dir: str, data_dir: str | None = None, *, overrides: dict | None = None,
            config_name: str | None = None, overwrite: bool = False, skip_bad_files: bool = False) -> dict:
    """Build `dataset` from `manual_dir` into `data_dir`; returns the summary it also prints."""
    import tensorflow_datasets as tfds

    from cfjax.data import sources
    from cfjax.data.builders import files

    builder_class, config = builder_config(dataset, dict(overrides or {}), config_name)
    data_dir = os.path.abspath(os.path.expanduser(data_dir or sources.default_data_dir()))
    if os.path.isdir(data_dir):
        sweep_scratch(data_dir)
    final = builder_class(config=config, data_dir=data_dir, file_format="array_record")
    if final.is_prepared() and not overwrite:
        saved = _check_same_settings(os.fspath(final.data_path), _config_fields(config))
        print(f"{dataset} is already prepared in {final.data_dir}; pass --overwrite to rebuild it.")
        return saved or summarize(final)
    files.require_manual_dir(manual_dir, builder_class.MANUAL_DOWNLOAD_INSTRUCTIONS)
    os.makedirs(data_dir, exist_ok=True)
    target = os.fspath(final.data_path)
    # Build beside the target, summary included, and move it in only when complete: a failed, interrupted
    # or killed build loses nothing and leaves nothing half-written (a killed one's scratch folder is
    # swept by the next prepare into the same data_dir).
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}_", dir=data_dir)
    try:
        _write_owner(scratch, target)
        builder = builder_class(config=config, data_dir=scratch, file_format="array_record",
                                skip_bad_files=skip_bad_files)
        print(f"Preparing {dataset} from {manual_dir} ...", flush=True)
        try:
            # TFDS prints the scratch folder's path; its progress bars (stderr) stay, our summary follows.
            with contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                    manual_dir=os.path.abspath(manual_dir),
                    download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
                ))
        except AssertionError as error:  # TFDS's "No examples were yielded" for a split
            raise DataError(f"preparing {dataset} from {manual_dir}: {error} (images smaller than the "
                                  f"patch size, or every file skipped?)") from error
        builder.mask_levels.check(manual_dir, threshold=getattr(config, "mask_threshold", None),
                                  crack_value=getattr(config, "crack_value", None))
        built = os.fspath(builder.data_path)
        summary = summarize(tfds.builder_from_directory(built), skipped=builder.bad_files.skipped)
        summary["path"] = target
        summary["builder_config"] = _config_fields(config)
        with open(os.path.join(built, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        previous = os.path.join(scratch, "previous")  # the old build stays whole until the new one is in
        if os.path.exists(target):
            os.rename(target, previous)
        os.rename(built, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


SCRATCH_PREFIX = ".cfjax_prepare_"
SUMMARY_FILE = "cfjax_summary.json"
_OWNER_FILE = "owner.json"
_UNOWNED_AGE_S = 3600  # a scratch folder without an owner file (an older cfjax's) is swept after an hour


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc), telling a reused pid from the original."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _write_owner(scratch: str, target: str) -> None:
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid()),
             "target": target}
    with open(os.path.join(scratch, _OWNER_FILE), "w") as f:
        json.dump(owner, f)


def _owner_gone(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return False  # another machine's build (a shared data_dir): not ours to judge
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return owner.get("start") is not None and _process_start(pid) not in (None, owner["start"])


def sweep_scratch(data_dir: str) -> list[str]:
    """Remove the scratch folders of builds whose process is gone (killed); a build killed between
    moving the old dataset aside and the new one in gets the old one back. Returns what it removed."""
    removed = []
    for name in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, name)
        if not name.startswith(SCRATCH_PREFIX) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, _OWNER_FILE)) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            owner = None
        try:
            if owner is None:
                if time.time() - os.path.getmtime(path) < _UNOWNED_AGE_S:
                    continue
            elif not _owner_gone(owner):
                continue
            previous = os.path.join(path, "previous")
            if owner and os.path.isdir(previous) and not os.path.exists(owner["target"]):
                os.rename(previous, owner["target"])
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        logging.warning("removed %d scratch folder(s) of interrupted prepare runs in %s", len(removed), data_dir)
    return removed


def _config_fields(config) -> dict:
    """The settings a builder config was prepared with, as JSON values."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.name not in ("release_notes", "supported_versions", "tags", "description", "version")}
    return json.loads(json.dumps(fields, default=list))


def _check_same_settings(path: str, settings: dict) -> dict | None:
    """The summary saved when `path` was prepared (None if there is none), after refusing to pass
    off a dataset prepared with other settings as this one."""
    summary_path = os.path.join(path, SUMMARY_FILE)
    if not os.path.exists(summary_path):
        return None
    with open(summary_path) as f:
        summary = json.load(f)
    saved = summary.get("builder_config", {})
    differing = sorted(k for k in settings if k in saved and saved[k] != settings[k])
    if differing:

        settings_text = ", ".join(f"{k}: {saved[k]!r}" for k in differing)
        raise DataError(f"{path} was prepared with other settings ({settings_text}); "
                        f"pass --overwrite to rebuild it, or --config_name to prepare these settings beside it")
    return summary


def summarize(builder, *, skipped: list | None = None) -> dict:
    """Examples per split and class, and the share of crack pixels where masks exist."""
    import numpy as np

    from cfjax.data.sources import undecoded

    features = builder.info.features
    names = features["label"].names
    summary = {"dataset": f"{builder.name}/{builder.info.config_name}", "path": os.fspath(builder.data_path),
               "classes": list(names), "splits": {}}
    for split in sorted(builder.info.splits):
        source = undecoded(builder, split)
        counts = np.zeros(len(names), int)
        crack_pixels = pixels = 0
        for i in range(len(source)):
            record = source[i]
            counts[record["label"]] += 1
            if "mask" in record and record.get("has_mask", True):
                crack_pixels += int((record["mask"] > 0).sum())
                pixels += record["mask"].size
        entry = {"examples": len(source), "per_class": dict(zip(names, counts.tolist()))}
        if pixels:
            entry["crack_pixel_share"] = round(crack_pixels / pixels, 5)
        summary["splits"][split] = entry
    if skipped:
        summary["skipped_files"] = skipped
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{summary['dataset']} in {summary['path']}"]
    for split, entry in summary["splits"].items():
        classes = ", ".join(f"{name} {count}" for name, count in entry["per_class"].items())
        share = f"; crack pixels {100 * entry['crack_pixel_share']:.2f}%" if "crack_pixel_share" in entry else ""
        lines.append(f"  {split:20s} {entry['examples']:7d} examples ({classes}){share}")
    if summary.get("skipped_files"):
        lines.append(f"  skipped {len(summary['skipped_files'])} unreadable file(s):")
        lines += [f"    {reason}" for reason in summary["skipped_files"]]
    return "\n".join(lines)


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM during `prepare`: the build stops, its scratch folder is removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame) -> None:
    raise Interrupted(signum)


def main(argv) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    if len(argv) > 1:
        sys.exit(f"cfjax.data.prepare: unexpected arguments {' '.join(argv[1:])}")
    several = cluster.process_rank()
    if several and several[0] != 0:  # `srun`/`mpirun` started it once per process: one build, by process 0
        print(f"cfjax.data.prepare: process {several[0]} of {several[1]} (${several[2]}): process 0 prepares the "
              "dataset for all of them; nothing to do here", flush=True)
        return

    values = {name: flags.FLAGS[name].value for name, *_ in _FLAGS}
    overrides = {}
    for name, field, *_ in _FLAGS:
        value = values[name]
        if field and value is not None:
            if field in _TUPLE_FIELDS:
                value = tuple(value) if isinstance(value, list) else (value,)
            overrides[field] = value
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        summary = prepare(values["dataset"], values["manual_dir"], values["data_dir"], overrides=overrides,
                          config_name=values["config_name"], overwrite=values["overwrite"],
                          skip_bad_files=values["skip_bad_files"])
    except DataError as error:
        print(f"cfjax.data.prepare: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"\ncfjax.data.prepare: stopped by {signal.Signals(signum).name}; the unfinished build "
              f"was removed", file=sys.stderr, flush=True)
        sys.exit(128 + signum)  # the shell's convention for "ended by signal N"
    print(format_summary(summary))
    data_dir = values["data_dir"]
    print(f"Train on it with --config.data.name={summary['dataset']}"
          + (f" --config.data.data_dir={os.path.abspath(data_dir)}" if data_dir else ""))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
