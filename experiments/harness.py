"""What the experiment scripts share: running the plain cfjax command line, and mean ± std over seeds."""

import glob
import json
import os
import subprocess
import sys

import numpy as np

from cfjax.config.upgrade import recorded_value

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --mode -> the file it writes in WORKDIR/<mode>/
OUTPUTS = {"explain": "explain.json", "attack": "robustness.json"}


def cfjax(args: list[str], log_path: str) -> None:
    """`python -m cfjax.main ARGS` from the repository root, logging to `log_path`; stops on failure."""
    with open(log_path, "a") as log:
        proc = subprocess.run([sys.executable, "-m", "cfjax.main", *args], cwd=REPO, stdout=log, stderr=log,
                              check=False)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): python -m cfjax.main {' '.join(args)}; see {log_path}")


def trained_and_analysed(args: list[str], workdir: str, mode: str, *, train: bool, mode_args: tuple = (),
                         output: str | None = None, records: str | None = None) -> dict | None:
    """Train the run (if asked and not finished), then run `--mode=MODE` on it unless its output exists
    (in WORKDIR/`output`, by default WORKDIR/MODE: where MODE with `mode_args` writes it); the output's JSON,
    or None when the run is not trained and `train` is off. Each step is exactly the command a user types,
    so a table row is what that command gives.

    With `records` (a folder in the repository), every finished analysis is also kept there with the run's
    results.json and the command that made it, and a run whose folder is absent (another machine) is read
    from its record when that was made by the same command and is not stale: long runs then add up over
    machines that never held them all (docs/reproducing.md, "Run records")."""
    args = [*args, f"--workdir={workdir}"]
    name = output or mode
    command = [*args, f"--mode={mode}", *mode_args]
    if not os.path.exists(os.path.join(workdir, "results.json")):
        recorded = _usable_record(records, workdir, name, command, args)
        if recorded is not None:
            return recorded["analysis"]
        if not train:
            print(f"skipping {workdir}: not trained (pass --train)")
            return None
        os.makedirs(workdir, exist_ok=True)
        print(f"training {workdir} ...", flush=True)
        cfjax(args, os.path.join(workdir, "train.log"))
    output_path = os.path.join(workdir, name, OUTPUTS[mode])
    stale = os.path.exists(output_path) and _stale_settings(_read(output_path), command)
    if stale:
        print(f"{mode} {' '.join(mode_args)} {workdir}: again, {stale}", flush=True)
    if not os.path.exists(output_path) or stale:
        print(f"{mode} {' '.join(mode_args)} {workdir} ...", flush=True)
        cfjax(command, os.path.join(workdir, f"{mode}.log"))
    analysis = _read(output_path)
    if records is not None:
        _write_record(records, workdir, name, command, analysis)
    return analysis


def records_in(out: str) -> str:
    """Where a script that writes its tables to `out` keeps its run records: out/runs."""
    return os.path.join(out, "runs")


def training_results(workdir: str, records: str | None = None) -> dict | None:
    """The run's results.json: from its folder, else from any of its records (None if neither exists)."""
    path = os.path.join(workdir, "results.json")
    if os.path.exists(path):
        return _read(path)
    found = sorted(glob.glob(os.path.join(_record_folder(records, workdir), "*.json"))) if records else []
    return _read(found[0])["results"] if found else None


def _record_folder(records: str, workdir: str) -> str:
    return os.path.join(records, os.path.basename(os.path.normpath(workdir)))


def _portable(command: list[str], workdir: str) -> list[str]:
    """The command with the runs folder written as {runs}, so records compare across machines and folders
    (`--transfer_from=` names another run in the same folder)."""
    runs = os.path.dirname(os.path.abspath(workdir))
    return [arg.replace(runs, "{runs}") for arg in command]


def _write_record(records: str, workdir: str, name: str, command: list[str], analysis: dict) -> None:
    record = {"command": _portable(command, workdir), "results": _read(os.path.join(workdir, "results.json")),
              "analysis": analysis}
    folder = _record_folder(records, workdir)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=1)


def _usable_record(records: str | None, workdir: str, name: str, command: list[str],
                   training: list[str]) -> dict | None:
    """The record of this analysis when it was made by `command` and its settings are those `training` (the
    run's training command) resolves today, else None (saying why a record that exists is not used)."""
    path = os.path.join(_record_folder(records, workdir), f"{name}.json") if records else None
    if path is None or not os.path.exists(path):
        return None
    record = _read(path)
    if record["command"] != _portable(command, workdir):
        print(f"{workdir}: its record {path} was made by another command: {' '.join(record['command'])}")
        return None
    stale = _stale_settings(record["analysis"], training)  # (`command` would need the run's checkpoint)
    if stale:
        print(f"{workdir}: its record {path} is stale: {stale}")
        return None
    print(f"{workdir} {name}: from its record {path}", flush=True)
    return record


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _stale_settings(analysis: dict, command: list[str]) -> str | None:
    """Why an explanation is not what `command` gives today: the saliency settings it was made with differ
    from those the command resolves (a default changed since, e.g. `saliency.views`), or None."""
    used = analysis.get("settings", {}).get("saliency")
    if not used:  # not an explanation, one older than its settings record, or maps no setting changes
        return None
    printed = subprocess.run([sys.executable, "-m", "cfjax.main", *command, "--print_config"], cwd=REPO,
                             capture_output=True, text=True, check=False)
    if printed.returncode:
        raise SystemExit(f"cannot resolve the config of {' '.join(command)}: {printed.stderr.strip()[-500:]}")
    wanted = config_section(printed.stdout, "saliency")
    changed = sorted(k for k in wanted if str(recorded_value(used, "saliency", k)) != wanted[k])
    return f"its saliency settings differ from today's in {', '.join(changed)}" if changed else None


def config_section(printed: str, section: str) -> dict[str, str]:
    """{field: value as printed} of one section of `--print_config`'s output (fields of one level)."""
    fields, inside = {}, False
    for line in printed.splitlines():
        if not line.startswith(" "):
            inside = line.rstrip() == f"{section}:"
        elif inside and line.startswith("  ") and not line.startswith("   ") and ": " in line:
            name, _, value = line.strip().partition(": ")  # a nested section's own line has no ": "
            fields[name] = value
    return fields


def mean_std(values: list) -> tuple[float, float] | None:
    """Mean and sample standard deviation of the values present (None and NaN dropped)."""
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
