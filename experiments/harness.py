"""What the experiment scripts share: running the plain cfjax command line, and mean ± std over seeds."""

import json
import os
import subprocess
import sys

import numpy as np

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
    if not os.path.exists(output):
        print(f"{mode} {' '.join(mode_args)} {workdir} ...", flush=True)
        cfjax([*args, f"--mode={mode}", *mode_args], os.path.join(workdir, f"{mode}.log"))
    with open(output) as f:
        return json.load(f)


def mean_std(values: list) -> tuple[float, float] | None:
    """Mean and sample standard deviation of the values present (None and NaN dropped)."""
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
