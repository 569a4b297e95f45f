"""cfjax's APGD, FAB-T, Square and AutoAttack-style ensemble against the reference implementations in
torchattacks, on the same weights and the same test images: robust accuracy side by side, per budget.

    python experiments/attack_cross_check.py --workdirs runs/fruits_s0,runs/fruits_classifier_s0 \\
        [--torch_python /work/venv_torch/bin/python] [--num_images 128] [--epsilons_255 0.5,1,2,4,8]

Each workdir is a trained run: its D (GAN runs; the attacked decision is the argmax over its first K
logits) or its classifier is exported as numpy arrays from the checkpoint, loaded into the PyTorch peer
(experiments/benchmarks/torch_peer.py; its logits are checked against cfjax's first) and attacked there by
torchattacks, run in `--torch_python`: a separate environment with torch, torchattacks and numpy (this
script re-runs itself there with --torch_side; cfjax is not needed in it). Members are compared one to
one at equal effort (iterations, targets, queries): APGD-CE; APGD-DLR where K >= 3; APGD-T where K >= 4;
FAB-T; Square with several seeds (it is random search: seeds are compared by their mean, and each seed's
spread is reported); the ensemble against the worst case over torchattacks' members, and against
torchattacks' AutoAttack wrapper where K >= 4 (its APGD-T reads the 3rd and 4th largest logits and fails
on fewer). Writes experiments/results/attack_cross_check.{json,md}. The agreement asked for: 1 point.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 0.01  # robust accuracies must agree within 1 point
PEER = os.path.join(REPO, "experiments", "benchmarks")


# Settings that only say which flags to compute: flags are kept per budget and per Square seed, so a rerun
# with more budgets or seeds reuses those already there.
INDEXING_SETTINGS = ("epsilons", "square_seeds")


class Progress:
    """Per-example robust flags {attack: {epsilon: flags}} kept in a JSON file after every attack, so an
    interrupted cross-check (hours on real weights and a 2-core CPU) resumes where it stopped, and more
    budgets or Square seeds add to it. A file made for another model or other attack settings (images,
    iterations, targets, queries) is started over, saying so. Used by both sides: json and os only."""

    def __init__(self, path: str, key: dict):
        self.path, self.key, self.robust = path, key, {}
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return
        if _measurement(saved.get("key")) == _measurement(key):
            self.robust = saved["robust"]
        else:
            print(f"{path}: made for another model or other settings; starting it over", flush=True)

    def flags(self, attack: str, eps: float, run: Callable[[], list[bool]]) -> list[bool]:
        """The saved flags of `attack` at `eps`, or `run()`'s, saved before they are returned."""
        done = self.robust.get(attack, {}).get(str(eps))
        if done is not None:
            return done
        flags = run()
        self.robust.setdefault(attack, {})[str(eps)] = flags
        partial = self.path + ".partial"
        with open(partial, "w") as f:
            json.dump({"key": self.key, "robust": self.robust}, f)
        os.replace(partial, self.path)
        return flags


def _measurement(key: dict | None) -> dict | None:
    """What a saved flag means: the key without the settings that only index flags."""
    if not isinstance(key, dict) or not isinstance(key.get("settings"), dict):
        return None
    return {**key, "settings": {k: v for k, v in key["settings"].items() if k not in INDEXING_SETTINGS}}


def member_attacks(num_classes: int) -> list[str]:
    """The members both libraries can run on K class logits (DLR needs 3, targeted DLR 4)."""
    return ["apgd-ce"] + (["apgd-dlr"] if num_classes >= 3 else []) + (["apgd-t"] if num_classes >= 4 else []) + [
        "fab-t", "square"]


# ------------------------------------------------------------------------------------------- torch side


def torch_side(exported: str, settings: dict, progress_path: str) -> dict:
    """torchattacks on the exported model: {attack: {epsilon: per-example robust flags}} and the logit check;
    attacks already in `progress_path` (same model and settings) are not run again."""
    sys.path.insert(0, PEER)
    import torch
    import torch_peer
    import torchattacks

    torch.set_num_threads(int(os.environ.get("CROSS_CHECK_THREADS", "2")))
    data = np.load(exported)
    network = json.loads(str(data["network"]))
    arrays = {name[len("param/"):]: data[name] for name in data.files if name.startswith("param/")}
    k = network["num_classes"]
    model = torch_peer.ClassLogits(torch_peer.classifier_from_arrays(arrays, network), k).eval()
    images = torch_peer.to_torch(data["images"], channels_last=False).contiguous()
    labels = torch.from_numpy(data["labels"].astype(np.int64))
    with torch.no_grad():
        logits = model(images).numpy()
    progress = Progress(progress_path, {"model": settings.get("model_key"), "settings": settings})
    out = {"max_logit_difference": float(np.max(np.abs(logits - data["logits"][:, :k]))), "robust": progress.robust}
    steps, targets, queries = settings["iterations"], settings["targets"], settings["queries"]

    def attack(name: str, eps: float, seed: int):
        """torchattacks' member `name` at `eps` (`seed`: Square's; the others run seed 0)."""
        n_classes = min(k, targets + 1)
        return {"apgd-ce": lambda: torchattacks.APGD(model, eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0),
                "apgd-dlr": lambda: torchattacks.APGD(model, eps=eps, steps=steps, n_restarts=1, loss="dlr", seed=0),
                "apgd-t": lambda: torchattacks.APGDT(model, eps=eps, steps=steps, n_restarts=1, n_classes=n_classes,
                                                    seed=0),
                "fab-t": lambda: torchattacks.FAB(model, eps=eps, steps=steps, multi_targeted=True,
                                                  n_classes=n_classes, seed=0),
                "square": lambda: torchattacks.Square(model, eps=eps, n_queries=queries, n_restarts=1, seed=seed),
                "autoattack_wrapper": lambda: torchattacks.AutoAttack(model, eps=eps, version="standard",
                                                                      n_classes=k, seed=0)}[name]()

    def robust(name: str, eps: float, seed: int = 0) -> Callable[[], list[bool]]:
        def flags() -> list[bool]:
            adversarial = attack(name, eps, seed)(images, labels)
            with torch.no_grad():
                return (model(adversarial).argmax(1) == labels).tolist()
        return flags

    for eps in settings["epsilons"]:
        for name in member_attacks(k):
            seeds = settings["square_seeds"] if name == "square" else [0]
            for seed in seeds:
                progress.flags(f"square/seed{seed}" if name == "square" else name, eps, robust(name, eps, seed))
        if k >= 4:
            progress.flags("autoattack_wrapper", eps, robust("autoattack_wrapper", eps))
    return out


# ------------------------------------------------------------------------------------------- cfjax side


def _flat(tree, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) or hasattr(value, "items"):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = np.asarray(value, np.float32)
    return flat


def write_export(path: str, params, network: dict, images: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> None:
    """What the torch side reads: the network's fields, its parameters, the images, labels and cfjax's logits."""
    np.savez(path, images=images, labels=labels, logits=logits, network=json.dumps(network),
             **{f"param/{name}": value for name, value in _flat(params).items()})


def export(workdir: str, num_images: int, path: str) -> dict:
    """The run's D or classifier, test images, labels and cfjax's logits, saved for the torch side."""
    from cfjax.data import pipeline
    from cfjax.saved_runs import load_run, saved_config

    config = saved_config(workdir)
    run = load_run(config, workdir)
    readout = next(r for r in run.kind.readouts(run.params) if r.name in ("D", "classifier"))
    params = readout.params["params"] if "params" in readout.params else readout.params
    data = pipeline.evaluation_arrays(config, "test")
    images, labels = np.asarray(data["image"][:num_images], np.float32), np.asarray(data["label"][:num_images])
    logits = np.asarray(readout.apply_fn(readout.params, images))
    network = {**config.discriminator.to_dict(), "num_outputs": int(logits.shape[-1]),
               "num_classes": int(readout.num_classes)}
    network["widths"] = list(network["widths"])
    write_export(path, params, network, images, labels, logits)
    return {"readout": readout, "images": images, "labels": labels, "config_name": config.name, "step": run.step,
            "num_classes": readout.num_classes, "clean_accuracy": float(np.mean(
                np.argmax(logits[:, :readout.num_classes], -1) == labels))}


def start_torch_side(torch_python: str, exported: str, settings: dict, workspace: str) -> Callable[[], dict]:
    """This script with --torch_side in the torch environment, started now (it runs beside cfjax's attacks);
    the returned function waits for it and gives its output. Its progress is kept in `workspace`."""
    settings_path, output = os.path.join(workspace, "settings.json"), os.path.join(workspace, "torch.json")
    with open(settings_path, "w") as f:
        json.dump(settings, f)
    log = open(os.path.join(workspace, "torch.log"), "w+")
    proc = subprocess.Popen([torch_python, os.path.abspath(__file__), "--torch_side", exported, "--settings",
                             settings_path, "--output", output, "--progress",
                             os.path.join(workspace, "torch_progress.json")], stdout=log, stderr=subprocess.STDOUT)

    def result() -> dict:
        returncode = proc.wait()
        log.seek(0)
        tail = log.read()[-3000:]
        log.close()
        if returncode:
            raise RuntimeError(f"the torch side failed on {exported}:\n{tail}")
        with open(output) as f:
            return json.load(f)

    return result


def cfjax_side(model: dict, settings: dict, progress_path: str) -> dict:
    """cfjax's attacks on the same model and images: {attack: {epsilon: per-example robust flags}}; attacks
    already in `progress_path` (same model and settings) are not run again."""
    import jax

    from cfjax import attacks

    readout, k = model["readout"], model["num_classes"]
    # Square's proposals are drawn per batch, as torchattacks (AutoAttack's port) draws them: the same search.
    common = dict(num_classes=k, iterations=settings["iterations"], targets=settings["targets"],
                  queries=settings["queries"], square_shared_proposals=True)
    progress = Progress(progress_path, {"model": settings.get("model_key"), "settings": settings})

    jitted = {}  # one compiled attack per spec: budgets and seeds are arguments, so a sweep reuses it

    def run(spec, seed: int, eps: float) -> Callable[[], list[bool]]:
        def attack() -> list[bool]:
            if spec not in jitted:
                jitted[spec] = attacks.make_ensemble(readout.apply_fn, spec)
            result = jitted[spec](readout.params, model["images"], model["labels"], jax.random.PRNGKey(seed), eps)
            return (~np.asarray(result.success)).tolist()
        return attack

    for eps in settings["epsilons"]:
        for name in member_attacks(k):
            spec = attacks.EnsembleSpec(members=(name,), **common)
            seeds = settings["square_seeds"] if name == "square" else [0]
            for seed in seeds:
                progress.flags(f"square/seed{seed}" if name == "square" else name, eps, run(spec, seed, eps))
        progress.flags("ensemble", eps, run(attacks.EnsembleSpec(**common), 0, eps))
        if k >= 4:  # torchattacks' wrapper runs 10 steps per member
            wrapper_like = attacks.EnsembleSpec(num_classes=k, iterations=10, targets=k - 1, queries=5000)
            progress.flags("ensemble_as_wrapper", eps, run(wrapper_like, 0, eps))
    return progress.robust


# ------------------------------------------------------------------------------------------- comparison


def _accuracy(flags: list) -> float:
    return float(np.mean(flags))


def compare(cfjax_robust: dict, torch_robust: dict, settings: dict) -> list[dict]:
    """One row per attack and budget: both robust accuracies and their difference (Square: seed means)."""
    rows = []
    square_seeds = [f"square/seed{s}" for s in settings["square_seeds"]]
    pairs = [(name, name, name) for name in cfjax_robust if name in torch_robust and not name.startswith("square/")]
    pairs.append(("square (seed mean)", square_seeds, square_seeds))
    # The ensemble against the worst case over torchattacks' members (what its wrapper computes, for any K).
    members = [n for n in torch_robust if n != "autoattack_wrapper" and not n.startswith("square/")] + square_seeds[:1]
    pairs.append(("ensemble vs worst case of torchattacks' members", "ensemble", members))
    if "autoattack_wrapper" in torch_robust:
        pairs.append(("ensemble (10 steps) vs torchattacks.AutoAttack", "ensemble_as_wrapper", "autoattack_wrapper"))
    for eps in settings["epsilons"]:
        for label, mine, theirs in pairs:
            if label.startswith("square"):
                ours = [_accuracy(cfjax_robust[s][str(eps)]) for s in mine]
                reference = [_accuracy(torch_robust[s][str(eps)]) for s in theirs]
                row = {"cfjax_per_seed": ours, "torchattacks_per_seed": reference}
                ours, reference = float(np.mean(ours)), float(np.mean(reference))
            elif isinstance(theirs, list):  # worst case: robust only if every member failed
                ours = _accuracy(cfjax_robust[mine][str(eps)])
                reference = _accuracy(np.all([torch_robust[m][str(eps)] for m in theirs], axis=0))
                row = {}
            else:
                ours, reference = _accuracy(cfjax_robust[mine][str(eps)]), _accuracy(torch_robust[theirs][str(eps)])
                row = {}
            rows.append({"attack": label, "epsilon_255": round(eps * 255, 4), "cfjax": ours,
                         "torchattacks": reference, "difference_points": 100 * (ours - reference),
                         "agree": abs(ours - reference) <= TOLERANCE + 1e-9, **row})
    return rows


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = ["# cfjax's attacks against torchattacks, same weights and images", "",
             (f"APGD / FAB: {s['iterations']} iterations, 1 restart, seed 0; targets: up to {s['targets']} wrong "
              "classes; "
              f"Square: {s['queries']} queries, seeds {s['square_seeds']} (random search: seed means compared). "
              f"Agreement asked for: {100 * TOLERANCE:g} point. torch {results['versions'].get('torch')}, "
              f"torchattacks {results['versions'].get('torchattacks')}, jax {results['versions'].get('jax')}."), ""]
    for model in results["models"]:
        lines += [f"## {model['workdir']} ({model['config_name']}, step {model['step']}, {model['readout']}, "
                  f"K = {model['num_classes']})", "",
                  f"{model['num_images']} test images, clean accuracy {model['clean_accuracy']:.3f}; torch logits "
                  f"differ from cfjax's by at most {model['max_logit_difference']:.2e}. {model['wrapper_note']}", "",
                  "| attack | ε (/255) | cfjax | torchattacks | difference (points) | within 1 point |",
                  "|---|---|---|---|---|---|"]
        for row in model["rows"]:
            extra = ""
            if "cfjax_per_seed" in row:
                extra = (" (seeds: " + ", ".join(f"{a:.3f}" for a in row["cfjax_per_seed"]) + " / "
                         + ", ".join(f"{a:.3f}" for a in row["torchattacks_per_seed"]) + ")")
            lines.append(f"| {row['attack']}{extra} | {row['epsilon_255']:g} | {row['cfjax']:.3f} | "
                         f"{row['torchattacks']:.3f} | {row['difference_points']:+.2f} | "
                         f"{'yes' if row['agree'] else '**no**'} |")
        lines.append("")
    return "\n".join(lines)


def cross_check(workdirs: list[str], torch_python: str, settings: dict, work_dir: str) -> dict:
    """Every workdir's model attacked by both libraries; the comparison rows. Each side's finished attacks
    are kept under `work_dir` (one folder per model), so a rerun after an interruption resumes."""
    import jax

    results = {"settings": settings, "models": [], "versions": {"jax": jax.__version__}}
    for index, workdir in enumerate(workdirs):
        workspace = os.path.join(work_dir, f"model{index}")
        os.makedirs(workspace, exist_ok=True)
        exported = os.path.join(workspace, "model.npz")
        model = export(workdir, settings["num_images"], exported)
        model_settings = {**settings, "model_key": f"{os.path.abspath(workdir)}@{model['step']}"}
        start = time.time()
        torch_result = start_torch_side(torch_python, exported, model_settings, workspace)
        ours = cfjax_side(model, model_settings, os.path.join(workspace, "cfjax_progress.json"))
        cfjax_seconds = time.time() - start
        theirs = torch_result()
        results["versions"].update(theirs.pop("versions"))
        k = model["num_classes"]
        results["models"].append({
            "workdir": workdir, "config_name": model["config_name"], "step": model["step"],
            "readout": model["readout"].name, "num_classes": k, "num_images": len(model["labels"]),
            "clean_accuracy": model["clean_accuracy"], "max_logit_difference": theirs["max_logit_difference"],
            # this invocation's: a resumed cross-check counts only the attacks it ran
            "seconds": {"cfjax": cfjax_seconds, "both (side by side)": time.time() - start},
            "wrapper_note": ("torchattacks.AutoAttack ran (K >= 4)." if k >= 4 else
                             f"torchattacks.AutoAttack not run: K = {k} < 4 (its APGD-T reads the 3rd and 4th "
                             "largest logits; the original AutoAttack refuses DLR below that too)."),
            "rows": compare(ours, theirs["robust"], settings)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdirs", help="comma-separated trained runs (a GAN: its D; a classifier run)")
    parser.add_argument("--torch_python", default="/work/venv_torch/bin/python")
    parser.add_argument("--num_images", type=int, default=128)
    parser.add_argument("--epsilons_255", default="0.5,1,2,4,8")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--targets", type=int, default=9)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--square_seeds", default="0,1,2")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "attack_cross_check"))
    parser.add_argument("--work_dir", help="where each side keeps its finished attacks, so a rerun of the same "
                        "command resumes (default: OUT.work/, removed once the results are written)")
    parser.add_argument("--combine", help="comma-separated .json outputs of earlier runs (one per workdir, run in "
                        "parallel): write them as one result")
    parser.add_argument("--torch_side", help=argparse.SUPPRESS)  # internal: run in the torch environment
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--progress", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_side:
        with open(args.settings) as f:
            settings = json.load(f)
        out = torch_side(args.torch_side, settings, args.progress)
        import torch
        import torchattacks

        out["versions"] = {"torch": torch.__version__, "torchattacks": torchattacks.__version__}
        with open(args.output, "w") as f:
            json.dump(out, f)
        return
    if args.combine:
        parts = []
        for path in args.combine.split(","):
            with open(path) as f:
                parts.append(json.load(f))
        results = {**parts[0], "models": [m for p in parts for m in p["models"]],
                   "command": " && ".join(p["command"] for p in parts),
                   "wall_time_s": max(p["wall_time_s"] for p in parts)}
        return _write(results, args.out)
    if not args.workdirs:
        raise SystemExit("--workdirs: give at least one trained run")
    settings = {"num_images": args.num_images, "epsilons": [float(e) / 255 for e in args.epsilons_255.split(",")],
                "iterations": args.iterations, "targets": args.targets, "queries": args.queries,
                "square_seeds": [int(s) for s in args.square_seeds.split(",")]}
    start = time.time()
    work_dir = args.work_dir or args.out + ".work"
    results = cross_check(args.workdirs.split(","), args.torch_python, settings, work_dir)
    results["wall_time_s"] = time.time() - start
    results["command"] = " ".join(["python", "experiments/attack_cross_check.py", *sys.argv[1:]])
    _write(results, args.out)
    if not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)


def _write(results: dict, out: str) -> None:
    from cfjax import storage

    storage.write_json_atomic(out + ".json", results)
    storage.write_text_atomic(out + ".md", markdown(results) + f"\nCommand: `{results['command']}`\n")
    print(markdown(results))
    failed = [r for m in results["models"] for r in m["rows"] if not r["agree"]]
    print(f"{len(failed)} of {sum(len(m['rows']) for m in results['models'])} comparisons outside 1 point")


if __name__ == "__main__":
    main()
