"""The decisions `--mode=attack` attacks in a restored run, each as `apply_fn(params, images) -> logits`
in inference mode (dropout off, normalisation statistics frozen).

* a GAN run: D with its hybrid readout (argmax over the first K of its K+1 logits; its p_fake is the
  uncertainty score) and G's classification head (which reads the encoder, so it is a classifier too);
* a classifier run: the plain classifier, or the PGD-trained one when `adversarial_training` was on.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from cfjax import supervised
from cfjax.errors import ConfigError
from cfjax.saved_runs import LoadedRun


@dataclasses.dataclass(frozen=True)
class AttackedModel:
    """One decision to attack: K classes, plus a fake logit when `has_detector` (D)."""

    name: str
    apply_fn: Callable[[Any, jnp.ndarray], jnp.ndarray]
    params: Any
    num_classes: int
    has_detector: bool = False


def attacked_models(run: LoadedRun) -> list[AttackedModel]:
    """Every classifier a run holds; a segmentation run has none and is refused."""
    k = run.config.num_classes
    if run.kind == "gan":
        generator, discriminator = run.networks
        g_params, d_params = run.params
        d_apply = lambda params, x: discriminator.apply({"params": params}, x, train=False)
        g_apply = lambda params, x: generator.apply(
            {"params": params}, x, jnp.zeros(x.shape[:1], jnp.int32), train=False)[1]
        return [AttackedModel("D", d_apply, d_params, k, has_detector=True),
                AttackedModel("G_head", g_apply, g_params, k)]
    if run.kind == "classifier":
        model = run.networks
        trained = run.config.adversarial_training
        name = "adversarial_classifier" if trained.epsilon > 0 else "classifier"
        return [AttackedModel(name, lambda params, x: supervised.apply_model(model, params, x), run.params, k)]
    raise ConfigError(f"config.model={run.config.model!r}: a segmentation run has no classifier to attack; "
                      "attack a GAN run (D, G's head) or a classifier run")
