"""Cross-source crack masks (docs/explaining.md, "Cross-source evaluation"): train on one crack source, or on a
leave-one-source-out pool of the others, and score the masks on every source's test patches with no retuning
there: every threshold comes from the training source's validation split.

    python experiments/cross_source.py --train     # train what is missing, explain on every target, tabulate
    python experiments/cross_source.py             # train nothing: analyse trained runs, tabulate
    python experiments/cross_source.py --train -- --config.num_steps=500   # more config flags for every run

Training sets: each source alone (seeds --seeds, default 0) and each pool of all sources but one (seeds
--pool_seeds, default 0,1,2). Models: the GAN (configs/cracks.py:sut), the plain classifier and the supervised
U-Net (configs/baselines.py:classifier,sut and unet,sut), each with config.data.name set to the training set.
The SUT-Crack runs are crack_iou_table.py's own folders (sut_s0, sut_classifier_s0, sut_unet_s0), reused.
Each step is the plain command line: `python -m cfjax.main --config=... --workdir=...`, then `--mode=explain`
(the same source: its test split) or `--mode=explain --eval_data=TARGET` (another source). Writes
experiments/results/cross_source.{json,md}.
"""

import argparse
import json
import os
import platform

import harness

from cfjax.explain import outputs

REPO = harness.REPO
SOURCES = ("crack_segmentation/sut", "crack_segmentation/crack500", "crack_segmentation/uav75")
# model -> (config pattern, workdir pattern, the methods it contributes)
MODELS = {
    "gan": ("configs/cracks.py:{variant}", "{key}_s{seed}",
            ("counterfactual", "d_grad_cam", "dark_pixels", "local_contrast")),
    "classifier": ("configs/baselines.py:classifier,{variant}", "{key}_classifier_s{seed}", ("classifier_grad_cam",)),
    "unet": ("configs/baselines.py:unet,{variant}", "{key}_unet_s{seed}", ("segmenter",)),
}
LABELS = {"counterfactual": "counterfactual mask", "d_grad_cam": "Grad-CAM on D",
          "classifier_grad_cam": "Grad-CAM on plain classifier", "dark_pixels": "dark pixels",
          "local_contrast": "local contrast",
          "segmenter": "U-Net (same training set)"}
BASELINES = ("d_grad_cam", "classifier_grad_cam", "dark_pixels", "local_contrast")
# column -> (caption, how to read it from one method's explain.json entry)
METRICS = {
    "ods_f1": ("tolerant F1 ODS, d=2, τ from source validation", lambda m: m.get("tolerant", {}).get("ods_f1")),
    "iou_tuned": ("strict IoU, τ tuned on source validation",
                  lambda m: m["thresholdings"].get("tuned", {}).get("iou_mean")),
    "ois_f1": ("tolerant F1 OIS, d=2 (per-image oracle τ)", lambda m: m.get("tolerant", {}).get("ois_f1")),
    "cliou_tuned": ("clIoU, d=4, at the tuned τ", lambda m: m["thresholdings"].get("tuned", {}).get("cliou")),
}
AIM = 0.9  # docs: the counterfactual mask reaches 90 % of the supervised U-Net's tolerant F1 on an unseen source


def key(train_set: str) -> str:
    """A training set's short name, the run folders' prefix: sut, or sut+crack500 for a pool."""
    return "+".join(name.split("/")[-1] for name in train_set.split("+"))


def leave_one_out(sources: list[str]) -> list[str]:
    """Every pool of all sources but one (none for fewer than three sources: those pools are single sources)."""
    if len(sources) < 3:
        return []
    return ["+".join(s for s in sources if s != left_out) for left_out in sources]


def explained(model: str, train_set: str, target: str, seed: int, args) -> dict | None:
    """One run's explain.json on one target (training it first if asked and missing); None if not trained."""
    config, pattern, _ = MODELS[model]
    workdir = os.path.join(args.runs, pattern.format(key=key(train_set), seed=seed))
    flags = [f"--config={config.format(variant=args.variant)}", f"--config.data.name={train_set}",
             f"--config.seed={seed}", *args.extra]
    # The run's own test split is what crack_iou_table.py's explain wrote; another source is --eval_data's.
    own = target == train_set
    mode_args = () if own else (f"--eval_data={target}",)
    output = outputs.OWN if own else outputs.for_dataset(target)
    def analysed():
        return harness.trained_and_analysed(flags, workdir, "explain", train=args.train, mode_args=mode_args,
                                            output=output, records=harness.records_in(args.out))

    results = analysed()
    local = os.path.exists(os.path.join(workdir, "results.json"))  # else read from its record
    if results is not None and local and any("tolerant" not in entry for entry in results["methods"].values()):
        # An explanation written before cfjax counted the tolerant scores: the same command again adds them,
        # and the harness then records the new one.
        print(f"explain {workdir} again: its {output}/explain.json predates the tolerant scores", flush=True)
        harness.cfjax([*flags, f"--workdir={workdir}", "--mode=explain", *mode_args],
                     os.path.join(workdir, "explain.log"))
        results = analysed()
    return results


def collect(args) -> dict:
    """{(train set, target): {method: [explain.json entry per seed]}} and the run records."""
    cells, runs = {}, []
    for train_set in args.train_sets:
        seeds = args.pool_seeds if "+" in train_set else args.seeds
        for target in args.targets:
            row = cells.setdefault((train_set, target), {})
            for model, (_, _, methods) in MODELS.items():
                for seed in seeds:
                    results = explained(model, train_set, target, seed, args)
                    if results is None:
                        continue
                    runs.append({"train_set": train_set, "target": target, "model": model, "seed": seed,
                                 "workdir": results["workdir"], "step": results["step"],
                                 "source": results["data"]["source"], "num_damaged": results["data"]["num_damaged"],
                                 "explain_wall_time_s": results["wall_time_s"]})
                    for method in methods:
                        row.setdefault(method, []).append(results["methods"][method])
    return {"cells": cells, "runs": runs}


def tabulate(cells: dict) -> list[dict]:
    """One row per (train set, target): every metric of every method as (mean, std, n seeds), the ratios of
    the counterfactual mask's tolerant F1 to two U-Nets', and whether it beats every attribution baseline."""
    rows = []
    for (train_set, target), methods in cells.items():
        if not methods:
            continue
        row = {"train_set": train_set, "target": target, "unseen": target not in train_set.split("+"),
               "methods": {name: {"seeds": len(entries),
                                  **{metric: harness.mean_std([read(e) for e in entries])
                                     for metric, (_, read) in METRICS.items()}}
                           for name, entries in methods.items()}}
        rows.append(row)
    in_domain = {row["target"]: row["methods"].get("segmenter", {}).get("ods_f1") for row in rows
                 if row["train_set"] == row["target"]}
    for row in rows:
        ours = row["methods"].get("counterfactual", {}).get("ods_f1")
        same_training = row["methods"].get("segmenter", {}).get("ods_f1")
        row["ratio_to_unet_same_training_set"] = _ratio(ours, same_training)
        row["ratio_to_unet_in_domain"] = _ratio(ours, in_domain.get(row["target"]))
        baselines = [row["methods"].get(b, {}).get("ods_f1") for b in BASELINES]
        row["beats_every_baseline"] = (None if ours is None or None in baselines
                                       else all(ours[0] > b[0] for b in baselines))
    return rows


def _ratio(numerator, denominator) -> float | None:
    if numerator is None or denominator is None or denominator[0] == 0:
        return None
    return numerator[0] / denominator[0]


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "not yet measured"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    mean, std = value
    shown = f"{mean:.{digits}f}" if std == 0 else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return shown + harness.seeds_note(value)


def markdown(rows: list[dict]) -> str:
    """The main table (tolerant F1 ODS, ratios, baselines beaten), then one table per other metric."""
    method_names = [m for m in LABELS if any(m in row["methods"] for row in rows)]

    def cell(row, method, metric):
        entry = row["methods"].get(method)
        return _fmt(entry and entry[metric])

    def trained(row):
        unseen = " (unseen)" if row["unseen"] else ""
        return f"{key(row['train_set'])} → {key(row['target'])}{unseen}"

    def seeds(row):
        return max(entry["seeds"] for entry in row["methods"].values())

    lines = []
    for index, (metric, (caption, _)) in enumerate(METRICS.items()):
        header = ["train → target", "seeds"] + [LABELS[m] for m in method_names]
        if index == 0:
            header += ["cf / U-Net same training set", "cf / U-Net trained on target (in-domain)",
                       "beats every baseline"]
        lines += [f"\n**{caption}**\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [trained(row), str(seeds(row))] + [cell(row, m, metric) for m in method_names]
            if index == 0:
                beats = row["beats_every_baseline"]
                cells += [_fmt(row["ratio_to_unet_same_training_set"]), _fmt(row["ratio_to_unet_in_domain"]),
                          "not yet measured" if beats is None else ("yes" if beats else "no")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def aim_lines(rows: list[dict]) -> str:
    """How many unseen-source rows meet the aim, against either U-Net."""
    unseen = [row for row in rows if row["unseen"]]
    out = []
    for field, which in (("ratio_to_unet_same_training_set", "the U-Net trained on the same training set"),
                         ("ratio_to_unet_in_domain", "the U-Net trained on the target itself (in-domain ceiling)")):
        measured = [row for row in unseen if row[field] is not None and row["beats_every_baseline"] is not None]
        met = [row for row in measured if row[field] >= AIM and row["beats_every_baseline"]]
        out.append(f"Unseen-source rows whose counterfactual tolerant F1 reaches {AIM:.0%} of {which} and beats "
                   f"every attribution baseline: {len(met)} of {len(measured)} measured ({len(unseen)} in all).")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", default=",".join(SOURCES), help="the crack sources, prepared datasets")
    parser.add_argument("--train_sets", default=None, help="training sets, each a source or sources joined by "
                        "'+' (default: every source alone and every leave-one-source-out pool)")
    parser.add_argument("--targets", default=None, help="the sources explained (default: --sources)")
    parser.add_argument("--seeds", default="0", help="seeds of the single-source runs")
    parser.add_argument("--pool_seeds", default="0,1,2", help="seeds of the pooled runs")
    parser.add_argument("--variant", default="sut", help="the configs' variant (configs/cracks.py:VARIANT); "
                        "tiny for tests")
    parser.add_argument("--runs", default=os.path.join(REPO, "runs"), help="where the run folders are (or go)")
    parser.add_argument("--train", action="store_true", help="train runs that are missing")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    parser.add_argument("extra", nargs="*", help="more --config.FIELD=VALUE flags for every run (after --)")
    args = parser.parse_args(argv)
    sources = args.sources.split(",")
    args.train_sets = args.train_sets.split(",") if args.train_sets else sources + leave_one_out(sources)
    args.targets = args.targets.split(",") if args.targets else sources
    args.seeds, args.pool_seeds = ([int(s) for s in seeds.split(",")] for seeds in (args.seeds, args.pool_seeds))
    collected = collect(args)
    rows = tabulate(collected["cells"])
    if not rows:
        raise SystemExit("no finished runs to tabulate; pass --train")
    table = markdown(rows)
    caption = (f"Cross-source crack masks: trained on the left, scored on the target's test patches, every τ (tuned, "
               f"top-k, ODS) from the training set's own validation split (pooled splits for a pool); mean ± std over "
               f"seeds. 'cf / U-Net same training set' divides the counterfactual mask's tolerant F1 ODS by the "
               f"U-Net's trained on the same images (with masks); 'in-domain' by the U-Net's trained and scored on "
               f"the target itself (its ceiling). Configs: "
               f"{', '.join(c.format(variant=args.variant) for c, _, _ in MODELS.values())}, with config.data.name "
               f"the training set.\n")
    text = caption + table + "\n" + aim_lines(rows)
    summary = {
        "rows": rows, "seeds": args.seeds, "pool_seeds": args.pool_seeds, "sources": sources,
        "train_sets": args.train_sets, "targets": args.targets, "runs": collected["runs"],
        "configs": {model: config.format(variant=args.variant) for model, (config, _, _) in MODELS.items()},
        "extra_flags": args.extra, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "aim": f"on an unseen source, counterfactual tolerant F1 ODS >= {AIM} x the U-Net's and above every baseline",
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cross_source.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.out, "cross_source.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
