"""The README's crack-mask table: cfjax's counterfactual masks against attribution baselines (on D and
on a plain classifier), dark pixels and a supervised U-Net, over several seeds, on SUT-Crack.

    python -m cfjax.data.prepare --dataset=crack_segmentation/sut --manual_dir=../shared/data/sut_crack_seg
    python experiments/crack_iou_table.py --train            # train what is missing, explain, tabulate
    python experiments/crack_iou_table.py                    # train nothing: analyse trained runs, tabulate

Each run is the plain command line (`python -m cfjax.main --config=... --workdir=...`, then the same
with `--mode=explain`), so a table row is exactly what a user's command gives. Finished runs and
explanations are reused. Writes experiments/results/crack_iou.{json,md}.
"""

import argparse
import json
import os
import platform

import harness

REPO = harness.REPO
# model -> (config, workdir pattern, methods it contributes to the table)
RUNS = {
    "gan": ("configs/cracks.py:sut", "sut_s{seed}",
            ("counterfactual", "d_grad_cam", "d_gradients", "d_integrated_gradients", "dark_pixels",
             "local_contrast")),
    "classifier": ("configs/baselines.py:classifier,sut", "sut_classifier_s{seed}",
                   ("classifier_grad_cam", "classifier_gradients", "classifier_integrated_gradients")),
    "unet": ("configs/baselines.py:unet,sut", "sut_unet_s{seed}", ("segmenter",)),
    # The robust GAN (D trained on PGD examples): its rows are named "robust_gan/<method>".
    "robust_gan": ("configs/cracks.py:sut,robust", "sut_robust_s{seed}",
                   ("counterfactual", "d_grad_cam", "d_gradients", "d_integrated_gradients")),
    # ... and the robust GAN whose D also learns its PGD examples as fake: rows "detector_gan/<method>".
    "detector_gan": ("configs/cracks.py:sut,detector", "sut_detector_s{seed}",
                     ("counterfactual", "d_grad_cam", "d_gradients", "d_integrated_gradients")),
}
LABELS = {
    "counterfactual": "**cfjax counterfactual mask** \\|x − G(x, no crack)\\|",
    "d_grad_cam": "Grad-CAM on D", "d_gradients": "input gradients on D",
    "d_integrated_gradients": "integrated gradients on D",
    "classifier_grad_cam": "Grad-CAM on plain classifier",
    "classifier_gradients": "input gradients on plain classifier",
    "classifier_integrated_gradients": "integrated gradients on plain classifier",
    "dark_pixels": "dark pixels", "local_contrast": "local contrast (black-hat-like filter)",
    "segmenter": "supervised U-Net (ceiling; trained on masks)",
}
THRESHOLDINGS = ("tuned", "otsu", "fixed", "top_k")


def label(row: str) -> str:
    """A table row's label: the method's, after its run's name when a later run repeats the method."""
    model, _, method = row.rpartition("/")
    return f"{model}: {LABELS.get(method, method)}" if model else LABELS.get(method, method)


def run_one(model: str, seed: int, runs_dir: str, train: bool, extra: list[str],
            records: str | None = None) -> dict | None:
    """Train (if asked and missing) and explain one run; its explain.json, or None if it is not trained
    (read from its record in `records` where the run's folder is absent: harness.trained_and_analysed)."""
    config, pattern, _ = RUNS[model]
    workdir = os.path.join(runs_dir, pattern.format(seed=seed))
    results = harness.trained_and_analysed([f"--config={config}", f"--config.seed={seed}", *extra], workdir,
                                          "explain", train=train, records=records)
    if results is not None:
        trained = harness.training_results(workdir, records)
        # Summed over every process that trained it (None: resumed from a checkpoint older than that record,
        # whose last process's time is not the training's cost); runs from before the record: their one time.
        results["train_wall_time_s"] = trained.get("training_wall_time_s", trained.get("wall_time_s"))
    return results


def tabulate(per_model: dict) -> tuple[dict, str]:
    """{method: {column: (mean, std, n)}} and the markdown table (mean ± std over seeds)."""
    rows = {}
    for model, results in per_model.items():
        for method in RUNS[model][2]:
            entries = [r["methods"][method] for r in results]
            row = {"seeds": len(entries)}
            for t in THRESHOLDINGS:
                row[f"iou_{t}"] = harness.mean_std([e["thresholdings"].get(t, {}).get("iou_mean") for e in entries])
            row["dice_tuned"] = harness.mean_std([e["thresholdings"].get("tuned", {}).get("dice_mean")
                                                  for e in entries])
            row["iou_dataset_tuned"] = harness.mean_std([e["thresholdings"].get("tuned", {}).get("iou_dataset")
                                                  for e in entries])
            row["fp_area_tuned"] = harness.mean_std([e["thresholdings"].get("tuned", {}).get("fp_area_empty")
                                              for e in entries])
            row["auroc"] = harness.mean_std([e["auroc"] for e in entries])
            # The crack literature's tolerant scores (absent from explain.json files older than them).
            for field in ("ods_f1", "ods_oracle_f1", "ois_f1"):
                row[field] = harness.mean_std([e.get("tolerant", {}).get(field) for e in entries])
            row["cliou_tuned"] = harness.mean_std([e["thresholdings"].get("tuned", {}).get("cliou") for e in entries])
            row["ap"] = harness.mean_std([e["ap"] for e in entries])
            rows[method if method not in rows else f"{model}/{method}"] = row  # a method a later run repeats
    def fmt(value, seeds):
        if value is None:
            return "–"
        shown = f"{value[0]:.3f}" if seeds == 1 else f"{value[0]:.3f} ± {value[1]:.3f}"
        return shown + harness.seeds_note(value)

    columns = [("IoU, τ tuned on val", "iou_tuned"), ("IoU, Otsu", "iou_otsu"), ("IoU, ½·max", "iou_fixed"),
               ("IoU, top-k", "iou_top_k"), ("Dice (tuned)", "dice_tuned"), ("pixel AUROC", "auroc"),
               ("AP", "ap"), ("FP area, no-crack patches (tuned)", "fp_area_tuned"),
               ("tolerant F1 ODS, d=2 (τ val)", "ods_f1"), ("F1 ODS oracle (τ test)", "ods_oracle_f1"),
               ("F1 OIS (oracle)", "ois_f1"), ("clIoU, d=4 (tuned)", "cliou_tuned")]
    lines = ["| method | seeds | " + " | ".join(c for c, _ in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for method, row in rows.items():
        cells = " | ".join(fmt(row[k], row["seeds"]) for _, k in columns)
        lines.append(f"| {label(method)} | {row['seeds']} | {cells} |")
    return rows, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", default=os.path.join(REPO, "runs"), help="where the run folders are (or go)")
    parser.add_argument("--train", action="store_true", help="train runs that are missing")
    harness.add_only_flag(parser, RUNS)
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    parser.add_argument("extra", nargs="*", help="more --config.FIELD=VALUE flags for every run")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    per_model = {}
    for model in harness.only_runs(parser, args.only, RUNS):
        results = [run_one(model, seed, args.runs, args.train, args.extra, harness.records_in(args.out))
                   for seed in seeds]
        per_model[model] = [r for r in results if r is not None]
        if not per_model[model]:
            del per_model[model]
    if not per_model:
        raise SystemExit("no finished runs to tabulate; pass --train")
    rows, table = tabulate(per_model)
    ceiling = rows.get("segmenter", {}).get("iou_tuned")
    ours = rows.get("counterfactual", {}).get("iou_tuned")
    ratio = f"\ncfjax / supervised U-Net (tuned IoU, means): {ours[0] / ceiling[0]:.3f}\n" if ours and ceiling else ""
    example = next(iter(per_model.values()))[0]
    summary = {
        "table": rows, "seeds": seeds,
        "runs": {m: [{"workdir": r["workdir"], "step": r["step"], "train_wall_time_s": r["train_wall_time_s"],
                      "explain_wall_time_s": r["wall_time_s"]} for r in results] for m, results in per_model.items()},
        "data": example["data"], "settings": example["settings"], "versions": example["versions"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "configs": {m: RUNS[m][0] for m in per_model}, "extra_flags": args.extra,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "crack_iou.json"), "w") as f:
        json.dump(summary, f, indent=2)
    header = (f"SUT-Crack test patches ({example['data']['num_damaged']} with cracks, "
              f"{example['data']['num_empty']} without), seeds {args.seeds}, mean ± std over seeds.\n\n")
    with open(os.path.join(args.out, "crack_iou.md"), "w") as f:
        f.write(header + table + ratio)
    print(header + table + ratio)


if __name__ == "__main__":
    main()
