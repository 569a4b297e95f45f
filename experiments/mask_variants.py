"""Which counterfactual saliency turns into the best crack mask? An ablation over the channel reduction
(mean / max / L2 / min of |x - x_hat|), a box blur of radius 0-2 and the views the map is averaged over
(`saliency.views`: the image alone, its 4 flips, its 8 flips and transpositions), on finished GAN runs,
chosen on the validation split (never on test):

    python experiments/mask_variants.py runs/sut_s0 runs/sut_s1 runs/sut_s2 [--out DIR]

For each variant: per-image IoU at the tuned threshold on the damaged validation patches (tuned there)
and on the damaged test patches (threshold frozen from validation), mean ± std over the runs. G runs
once per view of an image; every variant is a cheap function of the views and their x_hat. Writes
DIR/mask_variants.{json,md} (DIR: experiments/results).
"""

import argparse
import functools
import itertools
import json
import os

import jax.numpy as jnp
import ml_collections
from harness import REPO, mean_std

from cfjax import evaluate
from cfjax.data import pipeline
from cfjax.masks import NORMAL_CLASS, maps, scoring
from cfjax.saved_runs import load_run, saved_config

VARIANTS = list(itertools.product(maps.REDUCTIONS, (0, 1, 2), maps.VIEWS))


def _variant_scores(params, batch, *, generator, grid):
    normal = jnp.full(batch["image"].shape[:1], NORMAL_CLASS, jnp.int32)
    views = maps.counterfactual_views(functools.partial(generator.apply, {"params": params}), batch["image"],
                                      normal, max(maps.VIEWS.values()))
    variants = {",".join(map(str, variant)): maps.view_averaged_map(views[:maps.VIEWS[variant[2]]],
                                                                     _settings(*variant))
                for variant in VARIANTS}
    return scoring.score_batch(variants, batch["mask"], grid=grid)


def _settings(reduce: str, radius: int, views: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"reduce": reduce, "blur_radius": radius, "views": views})


def score_run(workdir: str) -> dict:
    """{variant: (validation IoU, test IoU)} at the threshold tuned on validation."""
    config = saved_config(workdir)
    run = load_run(config, workdir)
    grid = evaluate.threshold_grid(config)
    batch_fn = functools.partial(_variant_scores, generator=run.kind.models.generator, grid=grid)
    counts = {split: evaluate.SplitEvaluator(pipeline.evaluation_arrays(config, split), batch_fn,
                                             batch_size=config.eval.batch_size, mesh=run.mesh).run(run.params[0])
              for split in ("validation", "test")}
    names = scoring.method_names(counts["test"])
    val = counts["validation"]
    tuned = {split: scoring.summarize(counts[split], counts[split]["has_mask"], names, grid, val, val["has_mask"])
             for split in counts}
    return {name: {"validation": tuned["validation"][name]["thresholdings"]["tuned"]["iou_mean"],
                   "test": tuned["test"][name]["thresholdings"]["tuned"]["iou_mean"],
                   "threshold": tuned["test"][name]["thresholdings"]["tuned"]["threshold"]}
            for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()
    per_run = {workdir: score_run(workdir) for workdir in args.workdirs}
    rows = {}
    for variant in VARIANTS:
        name = ",".join(map(str, variant))
        rows[name] = {split: mean_std([per_run[w][name][split] for w in args.workdirs])
                      for split in ("validation", "test")}
    chosen = max(rows, key=lambda name: rows[name]["validation"][0])
    lines = ["| reduce | blur radius | views | IoU val (τ tuned there) | IoU test (τ from val) |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        reduce, radius, views = name.split(",")
        mark = " **(chosen on validation)**" if name == chosen else ""
        cells = " | ".join(f"{row[s][0]:.3f} ± {row[s][1]:.3f}" for s in ("validation", "test"))
        lines.append(f"| {reduce} | {radius} | {views}{mark} | {cells} |")
    table = "\n".join(lines) + f"\n\n{len(args.workdirs)} runs: {', '.join(args.workdirs)}\n"
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "mask_variants.json"), "w") as f:
        json.dump({"runs": per_run, "summary": rows, "chosen_on_validation": chosen}, f, indent=2)
    with open(os.path.join(args.out, "mask_variants.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
