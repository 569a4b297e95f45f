"""Run records: each finished analysis of a table's run kept in the repository, with the run's results.json and
the config the analysis ran with, so that a table over runs too long for one machine's session adds up over
machines that never held them all (docs/reproducing.md, "Run records").

A record is used in place of a run folder that is absent only while today's command would make the same run
and the same analysis: no training field differs (after `upgrade_dict`, the resumable ones aside, as a resumed
run is checked), no field of the evaluation sections differs, and the analysis's other flags are the same.
"""

import glob
import json
import os

import ml_collections

from cfjax import storage
from cfjax.config.compare import analysis_differences, with_evaluation_settings

RUNS_FOLDER = "{runs}"  # how a record writes the folder its run was in, so flags naming runs compare anywhere


def folder(records: str, workdir: str) -> str:
    """A run's records: one file per analysis (OUTPUT.json) in records/RUN."""
    return os.path.join(records, os.path.basename(os.path.normpath(workdir)))


def portable(flags: list[str], workdir: str) -> list[str]:
    """The flags with the run's folder written {runs} (`--transfer_from=` names a run beside it)."""
    runs = os.path.dirname(os.path.abspath(workdir))
    return [flag.replace(runs, RUNS_FOLDER) for flag in flags]


def analysis_config(saved: dict, command_config: dict) -> dict:
    """What an analysis runs with: the run's saved config with the command's evaluation sections, merged as
    `--mode=explain|attack` merges them."""
    return with_evaluation_settings(ml_collections.ConfigDict(saved), ml_collections.ConfigDict(command_config)
                                    ).to_dict()


def write(records: str, workdir: str, name: str, config: dict, flags: list[str], analysis: dict) -> None:
    """Keep one analysis of the run in `workdir` (its output folder's name `name`) with its results.json."""
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    record = {"config": config, "flags": portable(flags, workdir), "results": results, "analysis": analysis}
    os.makedirs(folder(records, workdir), exist_ok=True)
    storage.write_json_atomic(os.path.join(folder(records, workdir), f"{name}.json"), record)  # never half a record


def usable(records: str, workdir: str, name: str, config: dict, flags: list[str]) -> dict | None:
    """The record of this analysis when today's command (its resolved `config` and other `flags`) makes the
    same run and analysis, else None, saying why a record that exists is not used."""
    path = os.path.join(folder(records, workdir), f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    why = analysis_differences(record["config"], config)
    if record["flags"] != portable(flags, workdir):
        why.insert(0, f"flags: record has {' '.join(record['flags'])!r}")
    if why:
        print(f"{workdir}: its record {path} is not today's command's: {'; '.join(why[:5])}")
        return None
    print(f"{workdir} {name}: from its record {path}", flush=True)
    return record


def training_results(records: str, workdir: str) -> dict | None:
    """The results.json kept in any record of the run, or None."""
    found = sorted(glob.glob(os.path.join(folder(records, workdir), "*.json")))
    if not found:
        return None
    with open(found[0]) as f:
        return json.load(f)["results"]
