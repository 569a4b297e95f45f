"""What the experiment scripts share: running the plain cfjax command line, and mean ± std over seeds."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import run_records
import yaml

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

    With `records` (a folder in the repository), every finished analysis is also kept there (`run_records`),
    and a run whose folder is absent (another machine) is read from its record while today's command would
    make the same run and analysis."""
    args = [*args, f"--workdir={workdir}"]
    name = output or mode
    command = [*args, f"--mode={mode}", *mode_args]
    # The analysis's config overrides resolve with the training flags; its other flags are compared as given.
    overrides = [flag for flag in mode_args if flag.startswith("--config.")]
    other_flags = [flag for flag in mode_args if not flag.startswith("--config.")]
    command_config = resolved_config([*args, *overrides]) if records else None  # one --print_config per call
    if not os.path.exists(os.path.join(workdir, "results.json")):
        recorded = records and run_records.usable(records, workdir, name, command_config, other_flags)
        if recorded:
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
    if records:
        config = run_records.analysis_config(_read(os.path.join(workdir, "config.json")), command_config)
        run_records.write(records, workdir, name, config, other_flags, analysis)
    return analysis


def records_in(out: str) -> str:
    """Where a script that writes its tables to `out` keeps its run records: out/runs."""
    return os.path.join(out, "runs")


def training_results(workdir: str, records: str | None = None) -> dict | None:
    """The run's results.json: from its folder, else from any of its records (None if neither exists)."""
    path = os.path.join(workdir, "results.json")
    if os.path.exists(path):
        return _read(path)
    return run_records.training_results(records, workdir) if records else None


def resolved_config(args: list[str]) -> dict:
    """The config these training flags resolve to (`--print_config`, which starts no JAX), as plain dicts."""
    return yaml.unsafe_load(printed_config(args))  # ConfigDict prints YAML with !!python/tuple tags


def printed_config(command: list[str]) -> str:
    """What `python -m cfjax.main COMMAND --print_config` prints: the config the command runs with."""
    printed = subprocess.run([sys.executable, "-m", "cfjax.main", *command, "--print_config"], cwd=REPO,
                             capture_output=True, text=True, check=False)
    if printed.returncode:
        raise SystemExit(f"cannot resolve the config of {' '.join(command)}: {printed.stderr.strip()[-500:]}")
    return printed.stdout


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _stale_settings(analysis: dict, command: list[str]) -> str | None:
    """Why an explanation is not what `command` gives today: the saliency settings it was made with differ
    from those the command resolves (a default changed since, e.g. `saliency.views`), or None."""
    used = analysis.get("settings", {}).get("saliency")
    if not used:  # not an explanation, one older than its settings record, or maps no setting changes
        return None
    wanted = config_section(printed_config(command), "saliency")
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


def add_only_flag(parser: argparse.ArgumentParser, runs: dict) -> None:
    """`--only=A,B`: a table script trains and tabulates some of its runs (a long table a piece at a time)."""
    parser.add_argument("--only", default=",".join(runs),
                        help=f"some of the runs {tuple(runs)}, comma-separated (the table then has only theirs)")


def only_runs(parser: argparse.ArgumentParser, only: str, runs: dict) -> tuple[str, ...]:
    """The runs `--only` names, in the order given; an unknown name is a usage error."""
    chosen = tuple(only.split(","))
    unknown = [run for run in chosen if run not in runs]
    if unknown:
        parser.error(f"--only: unknown run {unknown[0]!r}; choose from {tuple(runs)}")
    return chosen


class SeedMean(tuple):
    """(mean, std) over the seeds that have a value, knowing how many did: `present` of `asked`. A seed's run
    lacks a value when its record predates the field; a table must say so rather than pass a mean of fewer
    seeds off as the mean of all (`seeds_note`). (Seeds whose runs have not finished are left out before;
    the tables' "seeds" column counts them, and `robust_gan.aims` asks for every seed.)"""

    present: int
    asked: int

    def __new__(cls, mean: float, std: float, present: int, asked: int) -> "SeedMean":
        obj = super().__new__(cls, (mean, std))
        obj.present, obj.asked = present, asked
        return obj

    def __getnewargs__(self) -> tuple:  # copy and pickle rebuild it whole
        return (*self, self.present, self.asked)

    @property
    def partial(self) -> bool:
        return self.present < self.asked


def mean_std(values: list) -> SeedMean | None:
    """Mean and sample standard deviation of the values present (None and NaN dropped; `SeedMean` counts
    them), or None when none is."""
    present = [v for v in values if v is not None and not np.isnan(v)]
    if not present:
        return None
    std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return SeedMean(float(np.mean(present)), std, len(present), len(values))


def seeds_note(value) -> str:
    """' (n of m seeds)' for a mean that leaves seeds out, else ''."""
    return f" ({value.present} of {value.asked} seeds)" if isinstance(value, SeedMean) and value.partial else ""
