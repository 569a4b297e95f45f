"""Evaluators: small objects with `run(params)` that run a jitted per-batch function over a whole split
on the device mesh (big_vision style), and the summary of one split's per-image results.

What a batch function computes belongs to the run's kind (`cfjax.kinds`); masks are scored through
`cfjax.masks.scoring`, the same code `--mode=explain` uses.
"""

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cfjax import parallel
from cfjax.masks import metrics, scoring


class SplitEvaluator:
    """Runs a per-batch function over a whole split under one jit; `run(params)` returns per-image
    results as numpy arrays (padding removed), with the split's `has_mask` flags. `params` is any pytree."""

    def __init__(self, data: dict, batch_fn, *, batch_size: int, mesh: Mesh, fields=("image", "label", "mask")):
        self.data = data
        self.mesh = mesh
        self.batch_size = batch_size
        self.fields = fields
        parallel.check_batch_size(batch_size, mesh, "config.eval.batch_size")
        rep = parallel.replicated(mesh)
        self._evaluate_batch = jax.jit(batch_fn, in_shardings=(rep, parallel.batch_sharding(mesh)),
                                       out_shardings=rep)

    def run(self, params: Any, data: dict | None = None) -> dict:
        """`data` (the same fields, any length) replaces the split for this pass, under the same program."""
        data = self.data if data is None else data
        num = len(data["label"])
        chunks = []
        mine = parallel.host_slice(self.batch_size, self.mesh)
        for start in range(0, num, self.batch_size):
            batch = {name: pad_batch(data[name][start:start + self.batch_size], self.batch_size)[mine]
                     for name in self.fields}
            out = self._evaluate_batch(params, parallel.shard_batch(batch, self.mesh))
            valid = slice(0, min(self.batch_size, num - start))
            chunks.append(jax.tree.map(lambda a, rows=valid: np.asarray(a)[rows], out))
        per_image = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
        per_image["has_mask"] = np.asarray(data.get("has_mask", np.ones(num, bool)), bool)
        return per_image


def pad_batch(array: np.ndarray, size: int) -> np.ndarray:
    """Repeat the last row so every batch has the compiled shape; padding is dropped afterwards."""
    missing = size - len(array)
    if missing <= 0:
        return array
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])


def threshold_grid(config: ml_collections.ConfigDict):
    """The thresholds masks are counted at (`tuned` picks one of them on validation)."""
    return metrics.threshold_grid(config.eval.num_thresholds)


# Per-image fields averaged into the summary, under the summary's name; absent fields are skipped.
_MEANS = {"flipped": "flip_rate", "p_fake_real": "p_fake_real", "p_fake_counterfactual": "p_fake_counterfactual",
          "edit_l1": "edit_l1"}
_ACCURACIES = {"d_pred": "d_accuracy", "head_pred": "g_head_accuracy", "pred": "accuracy"}


def summarize(per_image: dict, grid, tuned_on: dict | None = None) -> dict:
    """Scalar results for one split; mask thresholds are tuned on `tuned_on` (validation), else on itself.

    Every map scored by `masks.scoring.score_batch` gets an `iou_<method>` entry: the `tuned` thresholding
    of `masks.scoring.summarize`, on the images whose mask holds damage.
    """
    tuned_on = per_image if tuned_on is None else tuned_on
    labels = per_image["label"]
    damaged, _ = scoring.damage_rows(per_image, per_image["has_mask"]) if "truth" in per_image else (
        np.zeros(len(labels), bool), None)
    result = {"num_images": int(len(labels)), "num_crack_images": int(damaged.sum())}
    for field, name in _ACCURACIES.items():
        if field in per_image:
            result[name] = float((per_image[field] == labels).mean())
    for field, name in _MEANS.items():
        if field in per_image:
            result[name] = float(per_image[field].mean())
    if not damaged.any() or not scoring.damage_rows(tuned_on, tuned_on["has_mask"])[0].any():
        return result
    names = scoring.method_names(per_image)
    summary = scoring.summarize(per_image, per_image["has_mask"], names, grid, tuned_on, tuned_on["has_mask"])
    for name in names:
        result[f"iou_{name}"] = summary[name]["thresholdings"]["tuned"]
    return result
