"""Regenerate every table and figure in README.md from scratch, one step after another:

    python experiments/reproduce.py                     # full: README's configs and seeds (hours on a CPU)
    python experiments/reproduce.py --quick             # minutes: the same steps at tiny sizes, one seed
    python experiments/reproduce.py --only=robustness   # some steps only (comma-separated)

Steps (each is the plain command a user would type, logged to OUT/logs/STEP.log):
  prepare      the real datasets from ../shared/data into TFDS's data folder (skipped when prepared)
  embedded     the main command on the embedded crack data, per seed    -> OUT/embedded.{json,md}
  multiclass   K=3 on the embedded crack types, then --mode=explain     -> OUT/multiclass.{json,md,png}
  crack_iou    experiments/crack_iou_table.py --train (SUT-Crack)       -> OUT/crack_iou.{json,md}
  mask_variants experiments/mask_variants.py on those GAN runs          -> OUT/mask_variants.{json,md}
  cross_source experiments/cross_source.py --train (SUT-Crack, CRACK500, UAV75, leave-one-out pools)
                                                                        -> OUT/cross_source.{json,md}
  robustness   experiments/robustness_table.py --train (fruit)          -> OUT/robustness.{json,md,png}
  benchmarks   experiments/benchmarks/{pgd,input_pipeline,performance,profile_step,conv_kernels}.py
               -> experiments/benchmarks/results/
                                                                           (OUT/benchmarks/ with --quick)

Runs go to --runs (default runs/reproduce/, a folder of their own). Finished runs and analyses there
are reused, so a second call resumes an interrupted one; delete the folder to start over. Every step
also writes OUT/STEP.reproduce.{json,md}: its commands, config flags, seeds, versions and wall time.
`--quick` writes to runs/reproduce_quick/ so it never overwrites the README's figures.
"""

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import harness

REPO = harness.REPO
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
DATASETS = {"crack_segmentation/sut": "sut_crack_seg", "crack_segmentation/crack500": "crack500_crops_360",
            "crack_segmentation/uav75": "uav75", "fruit_defects/apples": "fruits_fresh_rotten_224"}
STEPS = ("prepare", "embedded", "multiclass", "crack_iou", "mask_variants", "cross_source", "robustness",
         "benchmarks")
FULL_SEEDS = {"embedded": "0,1,2,3", "crack_iou": "0,1,2", "robustness": "0,1,2", "cross_source": "0"}
POOL_SEEDS = "0,1,2"  # cross_source's leave-one-source-out pools


def quick_flags() -> list[str]:
    """The `:tiny` variant as --config flags (sizes, steps, attack budgets), for the table scripts, whose
    configs are fixed (cracks.py:sut, fruits.py, baselines): the difference tiny makes to the default."""
    sys.path.insert(0, os.path.join(REPO, "configs"))
    import cracks

    from cfjax.config.compare import flatten_dict

    default, tiny = (flatten_dict(cracks.get_config(v).to_dict()) for v in ("default", "tiny"))
    skip = ("name", "data.num_train", "data.num_validation", "data.num_test")  # prepared data: whole splits
    flags = [f"--config.{field}={value}" for field, value in sorted(tiny.items())
             if default.get(field) != value and field not in skip]
    return flags + ["--config.attack.max_examples=16"]


class Reproduction:
    """Runs the steps; `run(step, commands)` logs each command and records the step's provenance."""

    def __init__(self, out: str, runs: str, quick: bool):
        self.out, self.runs, self.quick = out, runs, quick
        self.flags = quick_flags() if quick else []
        os.makedirs(os.path.join(out, "logs"), exist_ok=True)
        os.makedirs(runs, exist_ok=True)

    def seeds(self, step: str) -> str:
        return "0" if self.quick else FULL_SEEDS[step]

    def run(self, step: str, commands: list[list[str]], **provenance) -> None:
        start = time.time()
        log_path = os.path.join(self.out, "logs", f"{step}.log")
        with open(log_path, "a") as log:
            for command in commands:
                print(f"[{step}] {' '.join(command)}", flush=True)
                log.write(f"$ {' '.join(command)}\n")
                log.flush()
                proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
                if proc.returncode:
                    raise SystemExit(f"[{step}] failed ({proc.returncode}): {' '.join(command)}; see {log_path}")
        record = {"step": step, "quick": self.quick, "commands": [" ".join(c) for c in commands],
                  "wall_time_s": round(time.time() - start, 1), "versions": _versions(),
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores", **provenance}
        with open(os.path.join(self.out, f"{step}.reproduce.json"), "w") as f:
            json.dump(record, f, indent=2)
        with open(os.path.join(self.out, f"{step}.reproduce.md"), "w") as f:
            f.write(f"# {step}{' (quick)' if self.quick else ''}\n\n"
                    + "".join(f"- {field}: `{value}`\n" for field, value in record.items() if field != "commands")
                    + "\n```bash\n" + "\n".join(record["commands"]) + "\n```\n")
        print(f"[{step}] done in {record['wall_time_s'] / 60:.1f} min", flush=True)


def _versions() -> dict:
    import jax

    import cfjax

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"cfjax": cfjax.__version__, "jax": jax.__version__, "python": platform.python_version(),
            "commit": commit or None}


def _main_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cfjax.main", *args]


def prepare(r: Reproduction) -> None:
    commands = []
    for dataset, folder in DATASETS.items():
        if _prepared(dataset):
            print(f"[prepare] {dataset} is already prepared")
            continue
        source = os.path.join(SHARED_DATA, folder)
        if not os.path.isdir(source):
            raise SystemExit(f"[prepare] {source} is missing: {dataset} needs it (see its SOURCE.md)")
        commands.append([sys.executable, "-m", "cfjax.data.prepare", f"--dataset={dataset}", f"--manual_dir={source}"])
    r.run("prepare", commands, datasets=list(DATASETS))


def _prepared(dataset: str) -> bool:
    data_dir = os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
    return os.path.isdir(os.path.join(data_dir, *dataset.split("/")))


def embedded(r: Reproduction) -> None:
    """The README's first table: the main command on the embedded data, per seed, summarised."""
    config = "configs/cracks.py:tiny" if r.quick else "configs/cracks.py"
    seeds = [int(s) for s in r.seeds("embedded").split(",")]
    workdirs = [os.path.join(r.runs, f"cracks_s{seed}") for seed in seeds]
    r.run("embedded", [_main_command(f"--config={config}", f"--config.seed={seed}", f"--workdir={workdir}")
                       for seed, workdir in zip(seeds, workdirs)], config=config, seeds=seeds)
    results = [_read_json(os.path.join(w, "results.json")) for w in workdirs]
    fields = {"counterfactual mask IoU (per image)": ("iou_counterfactual", "iou_mean"),
              "counterfactual mask IoU (dataset)": ("iou_counterfactual", "iou_dataset"),
              "dark pixels IoU (per image)": ("iou_dark_pixels", "iou_mean"),
              "local contrast IoU (per image)": ("iou_local_contrast", "iou_mean")}
    lines = [f"Embedded crack data, {config}, seeds {seeds}: test split, mean ± std over seeds.", "",
             "| measure | mean ± std | per seed |", "|---|---|---|"]
    for label, (field, key) in fields.items():
        values = [res["test"][field][key] for res in results]
        lines.append(_row(label, values))
    for label, field in (("D accuracy", "d_accuracy"), ("G head accuracy", "g_head_accuracy"),
                         ("flip rate", "flip_rate")):
        lines.append(_row(label, [res["test"][field] for res in results]))
    lines.append(_row("wall time (s)", [res["wall_time_s"] for res in results]))
    _write(r.out, "embedded", "\n".join(lines) + "\n", {"seeds": seeds, "config": config, "results": results})


def _row(label: str, values: list) -> str:
    mean, std = harness.mean_std(values)
    return f"| {label} | {mean:.3f} ± {std:.3f} | {', '.join(f'{v:.3f}' for v in values)} |"


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _write(out: str, name: str, markdown: str, data: dict) -> None:
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=2)
    print(markdown)


def multiclass(r: Reproduction) -> None:
    """K=3 counterfactual masks on the embedded crack types (README figure)."""
    config = "configs/cracks.py:tiny" if r.quick else "configs/cracks.py"
    workdir = os.path.join(r.runs, "cracks_types3")
    args = [f"--config={config}", "--config.num_classes=3", "--config.name=cracks_types3", f"--workdir={workdir}"]
    r.run("multiclass", [_main_command(*args), _main_command(*args, "--mode=explain")], config=config, seeds=[0])
    shutil.copy(os.path.join(workdir, "explain", "multiclass.png"), os.path.join(r.out, "multiclass.png"))
    report = _read_json(os.path.join(workdir, "explain", "explain.json"))
    results = _read_json(os.path.join(workdir, "results.json"))
    markdown = (f"K=3 on the embedded crack types ({config}): D accuracy {results['test']['d_accuracy']:.3f}, "
                f"G head accuracy {results['test']['g_head_accuracy']:.3f}, "
                f"flip rate {results['test']['flip_rate']:.3f}; "
                f"figure multiclass.png.\n")
    _write(r.out, "multiclass", markdown, {"results": results, "explain": report})


def table_script(r: Reproduction, step: str, script: str) -> None:
    """crack_iou_table.py or robustness_table.py: trains what is missing, then tabulates into OUT."""
    seeds = r.seeds(step)
    command = [sys.executable, os.path.join("experiments", script), "--train", f"--seeds={seeds}",
               f"--runs={r.runs}", f"--out={r.out}", *(["--", *r.flags] if r.flags else [])]
    r.run(step, [command], seeds=seeds, extra_flags=r.flags)


def cross_source(r: Reproduction) -> None:
    """Every crack source alone and every leave-one-source-out pool, explained on every source; the SUT-Crack
    runs are the crack_iou step's (same folders)."""
    seeds, pool_seeds = r.seeds("cross_source"), "0" if r.quick else POOL_SEEDS
    command = [sys.executable, os.path.join("experiments", "cross_source.py"), "--train", f"--seeds={seeds}",
               f"--pool_seeds={pool_seeds}", f"--runs={r.runs}", f"--out={r.out}",
               *(["--", *r.flags] if r.flags else [])]
    r.run("cross_source", [command], seeds=seeds, pool_seeds=pool_seeds, extra_flags=r.flags)


def mask_variants(r: Reproduction) -> None:
    """The saliency-map ablation on the crack_iou step's GAN runs (README: the `sut` variant's masks)."""
    seeds = [int(s) for s in r.seeds("crack_iou").split(",")]
    workdirs = [os.path.join(r.runs, f"sut_s{seed}") for seed in seeds]
    r.run("mask_variants", [[sys.executable, "experiments/mask_variants.py", *workdirs, f"--out={r.out}"]],
          seeds=seeds)


def benchmarks(r: Reproduction) -> None:
    out = os.path.join(r.out, "benchmarks") if r.quick else os.path.join(REPO, "experiments", "benchmarks", "results")
    pgd = [sys.executable, "experiments/benchmarks/pgd.py", f"--out={out}"]
    pipeline = [sys.executable, "experiments/benchmarks/input_pipeline.py", f"--out={out}"]
    performance = [sys.executable, "experiments/benchmarks/performance.py", f"--out={out}"]
    kernels = [sys.executable, "experiments/benchmarks/conv_kernels.py", f"--out={out}"]
    profiles = [[sys.executable, "experiments/benchmarks/profile_step.py", f"--size={size}", f"--out={out}"]
                for size in (64, 128)]
    if r.quick:
        pgd += ["--batch=8", "--repeats=1"]
        pipeline += ["--steps=5", "--datasets=synthetic"]
        performance += ["--tiny", "--sizes=16", "--repeats=1", "--no-torch-compile", "--memory-workloads=gan"]
        kernels += ["--repeats=1"]
        profiles = [[sys.executable, "experiments/benchmarks/profile_step.py", "--tiny", "--size=16", "--calls=1",
                     f"--out={out}"]]
    commands = [pgd, pipeline, performance, *profiles]
    if importlib.util.find_spec("torch") is not None:  # the kernel comparison needs the `bench` extra
        commands.append(kernels)
    r.run("benchmarks", commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one seed: a smoke run in minutes")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps of {STEPS}")
    parser.add_argument("--out", default=None, help="results folder (default experiments/results, or "
                                                    "runs/reproduce_quick/results with --quick)")
    parser.add_argument("--runs", default=None, help="run folders (default runs/reproduce[_quick]; point it at "
                                                     "runs/ to reuse finished runs)")
    args = parser.parse_args()
    steps = args.only.split(",")
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {STEPS}")
    base = os.path.join(REPO, "runs", "reproduce_quick" if args.quick else "reproduce")
    out = args.out or (os.path.join(base, "results") if args.quick else os.path.join(REPO, "experiments", "results"))
    r = Reproduction(os.path.abspath(out), os.path.abspath(args.runs or base), args.quick)
    actions = {"prepare": prepare, "embedded": embedded, "multiclass": multiclass,
               "crack_iou": lambda r: table_script(r, "crack_iou", "crack_iou_table.py"),
               "mask_variants": mask_variants, "cross_source": cross_source,
               "robustness": lambda r: table_script(r, "robustness", "robustness_table.py"),
               "benchmarks": benchmarks}
    start = time.time()
    for step in STEPS:
        if step in steps:
            actions[step](r)
    print(f"all done in {(time.time() - start) / 60:.1f} min; results in {out}")


if __name__ == "__main__":
    main()
