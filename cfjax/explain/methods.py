"""The saliency methods a restored run offers, as one jittable `maps(params, images, labels)`.

* a GAN run: its counterfactual masks |x - G(x, normal)|, Grad-CAM / gradients / integrated gradients
  on D's class logit, and the dark-pixel and local-contrast baselines;
* a plain-classifier run: Grad-CAM / gradients / integrated gradients on its class logit;
* a segmentation U-Net run: its predicted crack probability (the supervised ceiling).

Every map is (B, H, W) in [0, 1]. Labels of -1 mean "unknown" (a folder of images): the explained
class is then the non-normal class the model finds most likely.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from cfjax import supervised
from cfjax.explain import attribution, saliency
from cfjax.models import class_logits


@dataclasses.dataclass(frozen=True)
class SaliencyMethods:
    """`names` in a fixed order; `maps(params, images, labels)` returns ({name: map}, extras)."""

    names: tuple
    maps: Callable
    draws_counterfactual: bool


def explained_classes(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """The class each map explains: the label when it is a non-normal class, else the most likely
    non-normal class (for normal images and unknown labels: "where would the damage be?")."""
    likeliest_damage = jnp.argmax(logits[:, 1:], axis=-1) + 1
    return jnp.where(labels > 0, labels, likeliest_damage).astype(jnp.int32)


def _attributions(prefix: str, classifier, params, images, classes, num_classes: int, ig_steps: int) -> dict:
    logits_fn = lambda x: class_logits(classifier.apply({"params": params}, x), num_classes)
    return {
        f"{prefix}grad_cam": attribution.normalise(attribution.grad_cam(classifier, params, images, classes)),
        f"{prefix}gradients": attribution.normalise(attribution.input_gradients(logits_fn, images, classes)),
        f"{prefix}integrated_gradients": attribution.normalise(
            attribution.integrated_gradients(logits_fn, images, classes, num_steps=ig_steps)),
    }


def saliency_methods(kind: str, networks: Any, config: ml_collections.ConfigDict) -> SaliencyMethods:
    """The methods of a run of `config.model == kind`; `networks` as returned by `saved_runs.load_run`."""
    explain = config.explain
    k = config.num_classes
    if kind == "gan":
        generator, discriminator = networks

        def maps(params, images, labels):
            g_params, d_params = params
            normal = jnp.zeros(images.shape[:1], jnp.int32)
            counterfactual, _ = generator.apply({"params": g_params}, images, normal)
            d_logits = discriminator.apply({"params": d_params}, images)
            classes = explained_classes(class_logits(d_logits, k), labels)
            out = {"counterfactual": saliency.counterfactual_map(images, counterfactual, config)}
            out.update(_attributions("d_", discriminator, d_params, images, classes, k, explain.ig_steps))
            out["dark_pixels"] = saliency.darkness_saliency(images)
            out["local_contrast"] = saliency.local_contrast_saliency(images, config.saliency.contrast_radius)
            return out, {"counterfactual_image": counterfactual}

        names = ("counterfactual", "d_grad_cam", "d_gradients", "d_integrated_gradients", "dark_pixels",
                 "local_contrast")
        return SaliencyMethods(names, maps, draws_counterfactual=True)

    model = networks
    if kind == "classifier":
        def maps(params, images, labels):
            classes = explained_classes(supervised.apply_model(model, params, images), labels)
            return _attributions("classifier_", model.network, params, images, classes, k, explain.ig_steps), {}

        names = ("classifier_grad_cam", "classifier_gradients", "classifier_integrated_gradients")
        return SaliencyMethods(names, maps, draws_counterfactual=False)

    def maps(params, images, labels):
        return {"segmenter": jax.nn.sigmoid(supervised.apply_model(model, params, images))}, {}

    return SaliencyMethods(("segmenter",), maps, draws_counterfactual=False)
