"""Tile seams in full-resolution maps, before and after blending (docs/explaining.md#seamless-maps).

    PYTHONPATH=. python experiments/seams.py --workdir=runs/sut_s0 [--photos=2] [--max_side=512]

For a few real photos (SUT-Crack, CRACK500 crops, UAV75), the counterfactual saliency map of the run in
--workdir (a patch-trained GAN: each photo is seen as tiles of its training size) made three ways:

* cut:     non-overlapping tiles stitched together (what --mode=explain --folder did before);
* blended: tiles every size/2, blended by a Hann window (`cfjax.tiling`, used now);
* whole:   one fully convolutional pass of G over the whole photo (GroupNorm statistics over the photo).

Prints the seam measure of each map (`tiling.seam_measure`, 1.0 = no seam) and of x_hat, the mean
absolute difference of the whole-photo map from the blended one, and the pixel AUROC of each map
against the ground-truth mask (the photos have masks), as a markdown table in
experiments/results/seams.{json,md}.
"""

import argparse
import glob
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import cfjax
from cfjax import tiling
from cfjax.data import transforms
from cfjax.data.builders import files
from cfjax.kinds.gan import counterfactual_and_map
from cfjax.masks import NORMAL_CLASS

DATA = "/work/shared/data"
SOURCES = (("sut_crack_seg", "images", "masks"), ("crack500_crops_360", "images", "masks"),
           ("uav75", "test_img", "test_lab"))


def auroc(scores, truth):
    truth = truth.ravel().astype(bool)
    if truth.all() or not truth.any():
        return float("nan")
    ranks = np.argsort(np.argsort(scores.ravel(), kind="stable"), kind="stable") + 1.0
    positives = truth.sum()
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * (~truth).sum()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--photos", type=int, default=2, help="photos per dataset")
    parser.add_argument("--max_side", type=int, default=640, help="photos are centre-cropped to this")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="where seams.{json,md} are written")
    args = parser.parse_args()
    run = cfjax.restore(args.workdir)
    size, config = run.config.data.image_size, run.config
    functions = run._run.kind.inference_functions()  # noqa: SLF001 (an experiment reaches in)
    generator = run._run.kind.models.generator  # noqa: SLF001
    normal = lambda x: jnp.full(x.shape[:1], NORMAL_CLASS, jnp.int32)

    def per_tile(params, tiles):
        return {"saliency": functions["saliency"](params, tiles, normal(tiles)),
                "x_hat": functions["counterfactual"](params, tiles, normal(tiles))}

    batch = run.tile_batch * jax.device_count()
    fn = tiling.on_mesh(per_tile, run.params, run._mesh, batch)  # noqa: SLF001

    @jax.jit
    def whole(params, image):
        (x_hat, _), saliency = counterfactual_and_map(generator, params[0], image[None], normal(image[None]),
                                                      config.saliency)
        return {"saliency": saliency[0], "x_hat": x_hat[0]}

    rows = []
    for name, image_dir, mask_dir in SOURCES:
        paths = sorted(glob.glob(os.path.join(DATA, name, image_dir, "*")))[:args.photos]
        for path in paths:
            photo = transforms.to_float(files.read_image(path))
            mask_path = glob.glob(os.path.join(DATA, name, mask_dir, files.stem(path) + ".*"))
            truth = files.read_binary_mask(mask_path[0], threshold=127, crack_value=None) if mask_path else None
            h, w = photo.shape[:2]
            side_h, side_w = min(h, args.max_side), min(w, args.max_side)
            top, left = (h - side_h) // 2, (w - side_w) // 2
            photo = photo[top:top + side_h, left:left + side_w]
            truth = None if truth is None else truth[top:top + side_h, left:left + side_w]
            cut = tiling.apply(fn, photo, tiling.Layout.of(photo.shape[:2], size, overlap=False), batch_size=batch)
            blended = tiling.apply(fn, photo, tiling.Layout.of(photo.shape[:2], size), batch_size=batch)
            multiple = 2 ** config.generator.depth  # the U-Net halves the size `depth` times
            ph, pw = -(-side_h // multiple) * multiple, -(-side_w // multiple) * multiple
            padded = np.pad(photo, ((0, ph - side_h), (0, pw - side_w), (0, 0)), mode="reflect")
            full = {k: np.asarray(v)[:side_h, :side_w] for k, v in whole(run.params, padded).items()}
            row = {"photo": f"{name}/{os.path.basename(path)}", "shape": f"{side_w}x{side_h}"}
            for method, out in (("cut", cut), ("blended", blended), ("whole", full)):
                row[f"seam_{method}"] = tiling.seam_measure(out["saliency"], size)
                row[f"seam_xhat_{method}"] = tiling.seam_measure(out["x_hat"], size)
                row[f"auroc_{method}"] = auroc(out["saliency"], truth) if truth is not None else float("nan")
            row["whole_vs_blended"] = float(np.abs(full["saliency"] - blended["saliency"]).mean())
            row["map_mean"] = float(blended["saliency"].mean())
            rows.append(row)
            print(row, flush=True)
    keys = ["seam_cut", "seam_blended", "seam_whole", "seam_xhat_cut", "seam_xhat_blended", "seam_xhat_whole",
            "auroc_cut", "auroc_blended", "auroc_whole", "whole_vs_blended", "map_mean"]
    command = " ".join(["python", *sys.argv])
    lines = [f"`{command}` (run: {args.workdir}, step {run.step})", "",
             "| photo | size | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    lines += [f"| {row['photo']} | {row['shape']} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |"
              for row in rows]
    lines.append("| **mean** | | " + " | ".join(f"**{np.nanmean([r[k] for r in rows]):.3f}**" for k in keys) + " |")
    print("\n".join(lines))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "seams.json"), "w") as f:
        json.dump({"command": command, "workdir": args.workdir, "step": run.step, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "seams.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
