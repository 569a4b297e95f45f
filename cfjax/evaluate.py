"""Evaluators: small objects with `run(params)` that score one split (big_vision style).

Counterfactual masks are scored on crack-positive images only (target: class 0, "no crack");
images with empty ground truth never enter the IoU.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cfjax import parallel
from cfjax.explain import metrics, saliency
from cfjax.models import p_fake, predict_class

def evaluation_targets(labels: jnp.ndarray) -> jnp.ndarray:
    """Crack images go to class 0 (no crack, the mask we score); class-0 images go to class 1."""
    return jnp.where(labels == 0, 1, 0).astype(labels.dtype)


def _evaluate_batch(g_params, d_params, batch, *, generator, discriminator, config, thresholds):
    images, labels, masks = batch["image"], batch["label"], batch["mask"]
    targets = evaluation_targets(labels)
    counterfactual, head_logits = generator.apply({"params": g_params}, images, targets, train=False)
    real_logits = discriminator.apply({"params": d_params}, images, train=False)
    cf_logits = discriminator.apply({"params": d_params}, counterfactual, train=False)
    k = config.num_classes
    maps = {
        "counterfactual": saliency.counterfactual_saliency(images, counterfactual, config.saliency.reduce),
        "dark_pixels": saliency.darkness_saliency(images),
        "local_contrast": saliency.local_contrast_saliency(images, config.saliency.contrast_radius),
    }
    out = {
        "label": labels,
        "d_pred": predict_class(real_logits, k),
        "head_pred": jnp.argmax(head_logits, -1),
        "flipped": predict_class(cf_logits, k) == targets,
        "p_fake_real": p_fake(real_logits),
        "p_fake_counterfactual": p_fake(cf_logits),
        "edit_l1": jnp.abs(counterfactual - images).mean(axis=(1, 2, 3)),
    }
    for name, saliency_map in maps.items():
        out[f"{name}_intersection"], out[f"{name}_union"] = metrics.iou_counts(saliency_map, masks, thresholds)
    return out


class SplitEvaluator:
    """Runs a per-batch function over a whole split under one jit; `run(params)` returns per-image
    results as numpy arrays (padding removed). `params` is any pytree (for the GAN, (G, D))."""

    def __init__(self, data: dict, batch_fn, *, batch_size: int, mesh: Mesh, fields=("image", "label", "mask")):
        self.data = data
        self.mesh = mesh
        self.batch_size = batch_size
        self.fields = fields
        parallel.check_batch_size(batch_size, mesh, "config.eval.batch_size")
        rep = parallel.replicated(mesh)
        self._evaluate_batch = jax.jit(batch_fn, in_shardings=(rep, parallel.batch_sharding(mesh)),
                                       out_shardings=rep)

    def run(self, params) -> dict:
        num = len(self.data["label"])
        chunks = []
        mine = parallel.host_slice(self.batch_size)
        for start in range(0, num, self.batch_size):
            batch = {name: pad_batch(self.data[name][start:start + self.batch_size], self.batch_size)[mine]
                     for name in self.fields}
            out = self._evaluate_batch(params, parallel.shard_batch(batch, self.mesh))
            valid = min(self.batch_size, num - start)
            chunks.append(jax.tree.map(lambda a: np.asarray(a)[:valid], out))
        per_image = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
        per_image["has_mask"] = np.asarray(self.data.get("has_mask", np.ones(num, bool)), bool)
        return per_image


class CounterfactualEvaluator(SplitEvaluator):
    """Scores D's readout, G's head, flip rate and mask IoU (per threshold) on one split."""

    def __init__(self, data: dict, *, generator, discriminator, config: ml_collections.ConfigDict, mesh: Mesh):
        self.thresholds = metrics.threshold_grid(config.eval.num_thresholds)
        fn = functools.partial(
            _evaluate_batch, generator=generator, discriminator=discriminator, config=config,
            thresholds=self.thresholds,
        )
        super().__init__(data, lambda params, batch: fn(*params, batch), batch_size=config.eval.batch_size,
                         mesh=mesh)

    def run(self, g_params, d_params) -> dict:
        """Per-image results over the whole split, as numpy arrays (padding removed)."""
        return super().run((g_params, d_params))


def pad_batch(array: np.ndarray, size: int) -> np.ndarray:
    """Repeat the last row so every batch has the compiled shape; padding is dropped afterwards."""
    missing = size - len(array)
    if missing <= 0:
        return array
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])


# Per-image fields averaged into the summary, under the summary's name; absent fields are skipped.
_MEANS = {"flipped": "flip_rate", "p_fake_real": "p_fake_real", "p_fake_counterfactual": "p_fake_counterfactual",
          "edit_l1": "edit_l1"}
_ACCURACIES = {"d_pred": "d_accuracy", "head_pred": "g_head_accuracy", "pred": "accuracy"}


def summarize(per_image: dict, thresholds, tuned_on: dict | None = None) -> dict:
    """Scalar results for one split; thresholds are tuned on `tuned_on` (validation), else on itself.

    Every saliency method with `<method>_intersection` / `<method>_union` counts gets an IoU entry.
    """
    tuned_on = per_image if tuned_on is None else tuned_on
    labels = per_image["label"]
    # IoU is scored on images of a non-normal class that carry a mask (classification sets have none).
    crack, tune_crack = ((d["label"] != 0) & d.get("has_mask", True) for d in (per_image, tuned_on))
    result = {"num_images": int(len(labels)), "num_crack_images": int(crack.sum())}
    for field, name in _ACCURACIES.items():
        if field in per_image:
            result[name] = float((per_image[field] == labels).mean())
    for field, name in _MEANS.items():
        if field in per_image:
            result[name] = float(per_image[field].mean())
    if not crack.any() or not tune_crack.any():
        return result
    methods = [key.removesuffix("_intersection") for key in per_image if key.endswith("_intersection")]
    for method in methods:
        inter, union = per_image[f"{method}_intersection"], per_image[f"{method}_union"]
        index = metrics.best_threshold_index(
            tuned_on[f"{method}_intersection"][tune_crack], tuned_on[f"{method}_union"][tune_crack]
        )
        result[f"iou_{method}"] = metrics.iou_summary(inter[crack], union[crack], index, thresholds)
    return result
