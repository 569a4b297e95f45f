"""What the experiment scripts share: running the plain cfjax command line, and mean ± std over seeds."""

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


def trained_and_analysed(args: list[str], workdir: str, mode: str, *, train: bool,
                         mode_args: tuple = (), output: str | None = None) -> dict | None:
    """Train the run (if asked and not finished), then run `--mode=MODE` on it unless its output exists
    (in WORKDIR/`output`, by default WORKDIR/MODE: where MODE with `mode_args` writes it); the output's JSON,
    or None when the run is not trained and `train` is off. Each step is exactly the command a user types,
    so a table row is what that command gives."""
    args = [*args, f"--workdir={workdir}"]
    if not os.path.exists(os.path.join(workdir, "results.json")):
        if not train:
            print(f"skipping {workdir}: not trained (pass --train)")
            return None
        os.makedirs(workdir, exist_ok=True)
        print(f"training {workdir} ...", flush=True)
        cfjax(args, os.path.join(workdir, "train.log"))
    output = os.path.join(workdir, output or mode, OUTPUTS[mode])
    command = [*args, f"--mode={mode}", *mode_args]
    stale = os.path.exists(output) and _stale_settings(output, command)
    if stale:
        print(f"{mode} {' '.join(mode_args)} {workdir}: again, {stale}", flush=True)
    if not os.path.exists(output) or stale:
        print(f"{mode} {' '.join(mode_args)} {workdir} ...", flush=True)
        cfjax(command, os.path.join(workdir, f"{mode}.log"))
    with open(output) as f:
        return json.load(f)


def _stale_settings(output: str, command: list[str]) -> str | None:
    """Why an explanation on disk is not what `command` gives today: the saliency settings it was made with
    differ from those the command resolves (a default changed since, e.g. `saliency.views`), or None."""
    with open(output) as f:
        used = json.load(f).get("settings", {}).get("saliency")
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
