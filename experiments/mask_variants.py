"""Which counterfactual saliency turns into the best crack mask? An ablation over the channel reduction
(mean / max / L2 of |x - x_hat|) and a box blur of radius 0-2, on finished GAN runs, chosen on the
validation split (never on test):

    python experiments/mask_variants.py runs/sut_s0 runs/sut_s1 runs/sut_s2

For each variant: per-image IoU at the tuned threshold on the damaged validation patches (tuned there)
and on the damaged test patches (threshold frozen from validation), mean ± std over the runs. G runs
once per image; every variant is a cheap function of x and x_hat. Writes
experiments/results/mask_variants.{json,md}.
"""

import argparse
import functools
import itertools
import json
import os

import jax.numpy as jnp
import numpy as np
from common import REPO, mean_std

from cfjax import evaluate
from cfjax.data import pipeline
from cfjax.explain import metrics, saliency
from cfjax.saved_runs import load_run, saved_config

VARIANTS = list(itertools.product(saliency.REDUCTIONS, (0, 1, 2)))


def _variant_counts(params, batch, *, generator, grid):
    normal = jnp.zeros(batch["image"].shape[:1], jnp.int32)
    counterfactual, _ = generator.apply({"params": params}, batch["image"], normal)
    out = {}
    for reduce, radius in VARIANTS:
        saliency_map = saliency.smooth(saliency.counterfactual_saliency(batch["image"], counterfactual, reduce),
                                       radius)
        out[f"{reduce},{radius}_intersection"], out[f"{reduce},{radius}_union"] = metrics.iou_counts(
            saliency_map, batch["mask"], grid)
    return out


def score_run(workdir: str) -> dict:
    """{variant: (validation IoU, test IoU)} at the threshold tuned on validation."""
    config = saved_config(workdir)
    run = load_run(config, workdir)
    generator, _ = run.networks
    grid = metrics.threshold_grid(config.eval.num_thresholds)
    batch_fn = functools.partial(_variant_counts, generator=generator, grid=grid)
    counts = {}
    for split in ("validation", "test"):
        data = pipeline.evaluation_arrays(config, split)
        damaged = data["mask"].any(axis=(1, 2))
        data = {name: np.asarray(array)[damaged] for name, array in data.items()}
        counts[split] = evaluate.SplitEvaluator(data, batch_fn, batch_size=config.eval.batch_size,
                                                mesh=run.mesh).run(run.params[0])
    scores = {}
    for reduce, radius in VARIANTS:
        name = f"{reduce},{radius}"
        val_i, val_u = counts["validation"][f"{name}_intersection"], counts["validation"][f"{name}_union"]
        index = metrics.best_threshold_index(val_i, val_u)
        test_i, test_u = counts["test"][f"{name}_intersection"], counts["test"][f"{name}_union"]
        scores[name] = {"validation": metrics.iou_summary(val_i, val_u, index, grid)["iou_mean"],
                        "test": metrics.iou_summary(test_i, test_u, index, grid)["iou_mean"],
                        "threshold": float(grid[index])}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()
    per_run = {workdir: score_run(workdir) for workdir in args.workdirs}
    rows = {}
    for reduce, radius in VARIANTS:
        name = f"{reduce},{radius}"
        rows[name] = {split: mean_std([per_run[w][name][split] for w in args.workdirs])
                      for split in ("validation", "test")}
    chosen = max(rows, key=lambda name: rows[name]["validation"][0])
    lines = ["| reduce | blur radius | IoU val (τ tuned there) | IoU test (τ from val) |", "|---|---|---|---|"]
    for name, row in rows.items():
        reduce, radius = name.split(",")
        mark = " **(chosen on validation)**" if name == chosen else ""
        cells = " | ".join(f"{row[s][0]:.3f} ± {row[s][1]:.3f}" for s in ("validation", "test"))
        lines.append(f"| {reduce} | {radius}{mark} | {cells} |")
    table = "\n".join(lines) + f"\n\n{len(args.workdirs)} runs: {', '.join(args.workdirs)}\n"
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "mask_variants.json"), "w") as f:
        json.dump({"runs": per_run, "summary": rows, "chosen_on_validation": chosen}, f, indent=2)
    with open(os.path.join(args.out, "mask_variants.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
