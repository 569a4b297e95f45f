"""Why is the plain GAN's D less robust than the plain classifier? The local geometry of each trained decision
at its test images (`cfjax.robustness.local_geometry`), beside the robust accuracy its attack measured:

    PYTHONPATH=. python experiments/local_geometry.py --runs=runs \\
        --workdirs=fruits_classifier_s0,fruits_adversarial_s0,fruits_s0,fruits_detector_s0 \\
        --counterfactuals_from=fruits_s0

For each run and each decision `--mode=attack` attacks (G's head is left out), on the test split: the
median boundary distance in L2 and in L-inf (margin over the gradient's norm), the gradient's density and
high-frequency share, D's class/fake gradient cosine, the first-order robust accuracy at 2/4/8/255, and
the accuracy the run's L∞ PGD sweep (PGD-10 by default) and the ensemble measured at those budgets (from
WORKDIR/attack/robustness.json, or --attack_dir's, else its committed record; only where that attack read
the same weights, by `params_digest`, and as many test images). With --counterfactuals_from (a GAN run),
every decision also reads that GAN's counterfactuals of the test images (toward the class its evaluation
aims at): the share it reads as that class, how well its margin's gradient lines up with the edit, and how
far along the edit (in L2) the decision first changes, also as a multiple of its worst-case first-order L2
distance. With --reference (a run), every decision's margin gradient is compared with that run's decision's at the same
images: the median cosine says whether the two are fragile in the same directions. With --figure, also
NAME_gradients.png: eight test images spread over the split and, beside each, every decision's margin
gradient (its magnitude summed over channels, each panel on its own scale up to its 99th percentile). Writes
experiments/results/NAME.{json,md} (--name, default local_geometry; --out another folder). Read-only on
the runs.
"""

import argparse
import json
import os

import numpy as np
import robustness_table
import run_records

import cfjax
from cfjax import storage, visualize
from cfjax.data import pipeline
from cfjax.kinds.gan import evaluation_targets
from cfjax.robustness import local_geometry
from cfjax.saved_runs import load_run, params_digest, saved_config

EPSILONS_255 = (2.0, 4.0, 8.0)
COLUMNS = (("l2_distance", "L2 distance", 1.0), ("linf_distance", "L∞ distance (/255)", 255.0),
           ("density", "density", 1.0), ("high_frequency_share", "high-freq. share", 1.0),
           ("margin", "margin", 1.0), ("gradient_l2", "‖∇‖₂", 1.0), ("fake_gradient_l2", "‖∇fake‖₂", 1.0),
           ("cosine_with_fake", "cos(∇class, ∇fake)", 1.0),
           ("overlap_with_fake_contrast", "abs. cos(∇class, ∇fake contrast)", 1.0),
           ("edit_alignment", "alignment with G's edit", 1.0),
           ("edit_flip_l2", "L2 to flip along G's edit", 1.0),
           ("edit_flip_over_l2_distance", "that ÷ L2 distance", 1.0),
           ("cosine_with_reference", "cos with the reference's ∇", 1.0))


def measured_accuracy(workdir: str, records: str, model: str, digest: str, num_images: int,
                      attack_dir: str = "attack") -> dict:
    """{"pgd"|"ensemble": {epsilon_255: accuracy}} from the run's attack output, else its committed record;
    empty where that attack read other weights (another checkpoint, or the same run trained again elsewhere:
    `params_digest`), or another number of test images than the probe."""
    analysis = storage.read_json(os.path.join(workdir, attack_dir, "robustness.json")) or (
        storage.read_json(os.path.join(run_records.folder(records, workdir), "attack.json")) or {}).get("analysis", {})
    found = {"pgd": {}, "ensemble": {}}
    attacked = analysis.get("models", {}).get(model)
    if (not attacked or analysis.get("params_digest") != digest
            or analysis["data"]["num_images"] != num_images):
        return found
    for name, group in (("pgd", "linf"), ("ensemble", "ensemble")):
        for epsilon in EPSILONS_255:
            value = robustness_table._row([attacked], group, epsilon, "accuracy")
            if value is not None:
                found[name][f"{epsilon:g}"] = value[0]
    return found


def decisions(run) -> list:
    """The readouts the probe reads: every decision `--mode=attack` attacks but G's head (a classifier on G's
    encoder, not the decision issue 19 asks about)."""
    return [r for r in run.kind.readouts(run.params) if not r.name.endswith("G_head")]


def refuse_another_dataset(flag: str, source, config) -> None:
    """Stop unless a run with `config` was trained on the dataset (and class count) of `source`'s run."""
    if (config.data.name, config.num_classes) != (source.data.name, source.num_classes):
        raise SystemExit(f"{flag} was trained on {source.data.name} ({source.num_classes} classes); "
                         f"{config.name} on {config.data.name} ({config.num_classes}): they do not share images")


def refuse_other_images(flag: str, images: np.ndarray, seen: np.ndarray) -> None:
    """Stop unless `images` are the ones read before (another data.fit, split or size reads others)."""
    if np.shape(images) != np.shape(seen) or not np.array_equal(images, seen):
        raise SystemExit(f"{flag}: the runs were not read at the same test images (another data.fit, split or "
                         "size); probe them in separate calls")


class Counterfactuals:
    """One GAN run's counterfactuals of a test split toward its evaluation targets, made once per dataset."""

    def __init__(self, gan_workdir: str):
        self.gan = cfjax.restore(gan_workdir)
        if "counterfactual" not in self.gan.offers:
            raise SystemExit(f"--counterfactuals_from={gan_workdir}: a {self.gan.kind} run has no counterfactuals; "
                             "name a GAN run")
        self._made: dict[str, dict] = {}

    def added_to(self, data: dict, config) -> dict:
        """`data` of a run with `config` plus "counterfactual" and "target"; refused for another dataset."""
        refuse_another_dataset(f"--counterfactuals_from={self.gan.workdir}", self.gan.config, config)
        if config.data.name not in self._made:
            targets = np.asarray(evaluation_targets(np.asarray(data["label"])))
            edited = self.gan.counterfactual(data["image"], targets).astype(np.float32)
            self._made[config.data.name] = {"counterfactual": edited, "target": targets}
        return {**data, **self._made[config.data.name]}


class Reference:
    """One run's first decision and its margin gradients at the first test split it is asked for."""

    def __init__(self, workdir: str):
        self.flag = f"--reference={workdir}"
        self.config = saved_config(workdir)
        run = load_run(self.config, workdir)
        self.readout = decisions(run)[0]
        self.mesh = run.mesh
        self._images = self._gradients = None

    def added_to(self, data: dict, config) -> dict:
        """`data` of a run with `config` plus "reference_gradient"; refused for other images."""
        refuse_another_dataset(self.flag, self.config, config)
        if self._gradients is None:
            self._images = data["image"]
            self._gradients = local_geometry.margin_gradients(self.readout, data, mesh=self.mesh,
                                                              batch_size=self.config.eval.batch_size)
        refuse_other_images(self.flag, data["image"], self._images)
        return {**data, "reference_gradient": self._gradients}


class GradientFigure:
    """Columns of the --figure: the first run's picked test images, then each decision's gradient magnitude."""

    def __init__(self, count: int = 8):
        self.count = count
        self.images = None
        self.columns: list[np.ndarray] = []

    def add(self, images: np.ndarray, gradients: np.ndarray) -> None:
        """One decision's column, from the probe's images and their gradients (the same rows each time)."""
        pick = np.linspace(0, len(images) - 1, self.count).round().astype(int)
        if self.images is None:
            self.images = np.asarray(images[pick])
        refuse_other_images("--figure", images[pick], self.images)
        strength = np.abs(gradients[pick]).sum(-1)
        scale = np.maximum(np.percentile(strength, 99, axis=(1, 2), keepdims=True), 1e-12)
        self.columns.append(visualize.heatmap(strength / scale, vmax=1.0))

    def save(self, path: str) -> None:
        rows = [[image, *(column[i] for column in self.columns)] for i, image in enumerate(self.images)]
        visualize.save_png(path, visualize.panel_grid(rows))


def measure(workdir: str, records: str, counterfactuals: Counterfactuals | None,
            reference: Reference | None = None, figure: GradientFigure | None = None,
            attack_dir: str = "attack") -> dict:
    """{model: summary with the measured accuracies} for every decision of the run (`decisions`); each
    decision's gradients also go into `figure`."""
    config = saved_config(workdir)
    run = load_run(config, workdir)
    data = pipeline.evaluation_arrays(config, "test")
    if counterfactuals:
        data = counterfactuals.added_to(data, config)
    if reference:
        data = reference.added_to(data, config)
    results, digest = {}, params_digest(run.params)
    for readout in decisions(run):
        geometry = local_geometry.per_image(readout, data, batch_size=config.eval.batch_size, mesh=run.mesh,
                                            keep_gradient=figure is not None)
        if figure:
            figure.add(data["image"], geometry.pop("gradient"))
        summary = local_geometry.summarize(geometry, EPSILONS_255)
        summary["measured_accuracy"] = measured_accuracy(workdir, records, readout.name, digest,
                                                         len(data["label"]), attack_dir)
        results[readout.name] = {"step": run.step, **summary}
    return results


def table(results: dict) -> str:
    """One row per (run, decision): medians over its correctly classified test images, then accuracies."""
    head = ["run: decision", "clean acc", "flip rate on G's x̂", *(title for _, title, _ in COLUMNS),
            *(f"acc {e:g}/255: first order / L∞ PGD / ensemble" for e in EPSILONS_255)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run, models in results.items():
        for model, summary in models.items():
            medians = summary["median_of_correct"]
            flips = summary.get("counterfactual_flip_rate")
            cells = [f"{run}: {model}", f"{summary['accuracy']:.3f}", "—" if flips is None else f"{flips:.3f}"]
            cells += ["—" if medians.get(field) is None else f"{medians[field] * scale:.3g}"
                      for field, _, scale in COLUMNS]
            for epsilon in EPSILONS_255:
                key = f"{epsilon:g}"
                measured = summary["measured_accuracy"]
                figures = [summary["first_order_accuracy"][key], measured["pgd"].get(key),
                           measured["ensemble"].get(key)]
                cells.append(" / ".join("—" if v is None else f"{v:.3f}" for v in figures))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="the folder holding the run folders")
    parser.add_argument("--workdirs", required=True, help="comma-separated run folder names under --runs")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "results"))
    parser.add_argument("--name", default="local_geometry", help="the results files' name, without extension")
    parser.add_argument("--records", default=os.path.join(here, "results", "runs"),
                        help="committed analyses, read where a run folder has no attack output")
    parser.add_argument("--attack_dir", default="attack",
                        help="the folder in each run folder that holds its attack's robustness.json (the --out of "
                             "its --mode=attack)")
    parser.add_argument("--counterfactuals_from", default=None,
                        help="a GAN run folder name under --runs whose counterfactuals every decision reads")
    parser.add_argument("--reference", default=None,
                        help="a run folder name under --runs whose decision's margin gradient every decision's is "
                             "compared with")
    parser.add_argument("--figure", action="store_true",
                        help="also draw NAME_gradients.png: test images and every decision's gradient magnitude")
    args = parser.parse_args()
    counterfactuals = args.counterfactuals_from and Counterfactuals(os.path.join(args.runs, args.counterfactuals_from))
    reference = args.reference and Reference(os.path.join(args.runs, args.reference))
    figure = GradientFigure() if args.figure else None
    results = {name: measure(os.path.join(args.runs, name), args.records, counterfactuals or None, reference or None,
                             figure, args.attack_dir) for name in args.workdirs.split(",")}
    edits = f"; G's x̂ from {args.counterfactuals_from}" if counterfactuals else ""
    edits += f"; reference gradients from {reference.readout.name} of {args.reference}" if reference else ""
    text = ("Local geometry of each decision on the test split (medians over correctly classified images; "
            f"`python experiments/local_geometry.py`, docs/robustness.md{edits})\n\n" + table(results))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    if figure:
        figure.save(os.path.join(args.out, f"{args.name}_gradients.png"))
    print(text)


if __name__ == "__main__":
    main()
