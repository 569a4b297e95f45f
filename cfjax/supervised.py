"""The supervised baselines as pure steps: a plain classifier (D's backbone, K outputs, class labels),
optionally PGD-trained (the standard defence D's robustness is compared with), and a segmentation
U-Net (G's architecture, trained on the masks: the ceiling the counterfactual masks are measured
against)."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cfjax import adversarial_training, losses, parallel, steps
from cfjax.adversarial_training import AdversarialTraining
from cfjax.models import make_plain_classifier, make_segmenter
from cfjax.optim import make_optimizer


@flax.struct.dataclass
class SupervisedState:
    """One network, its optimizer and the key for its dropout."""

    step: jnp.ndarray
    params: Any
    opt_state: optax.OptState
    key: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class ClassifierModel:
    """The plain classifier (D's backbone, K outputs) and its optimizer; `adversary` set for PGD training.
    Static under jit: steps close over it."""

    network: Any
    tx: optax.GradientTransformation
    adversary: AdversarialTraining | None = None

    def init(self, key: jax.Array, images: jnp.ndarray):
        return self.network.init(key, images)["params"]

    def apply(self, params, images: jnp.ndarray, *, train: bool = False, rngs=None) -> jnp.ndarray:
        """Class logits (B, K)."""
        return self.network.apply({"params": params}, images, train=train, rngs=rngs)

    def loss(self, outputs: jnp.ndarray, batch: dict) -> tuple[jnp.ndarray, dict]:
        """Cross-entropy on the class labels."""
        loss = losses.cross_entropy(outputs, batch["label"])
        return loss, {"ce": loss, "acc": (jnp.argmax(outputs, -1) == batch["label"]).mean()}


@dataclasses.dataclass(frozen=True)
class SegmenterModel:
    """The supervised U-Net (G's architecture, one logit per pixel) and its optimizer."""

    network: Any
    tx: optax.GradientTransformation
    adversary: ClassVar[None] = None  # trained on masks, never on PGD examples

    def init(self, key: jax.Array, images: jnp.ndarray):
        return self.network.init(key, images, jnp.zeros(images.shape[:1], jnp.int32))["params"]

    def apply(self, params, images: jnp.ndarray, *, train: bool = False, rngs=None) -> jnp.ndarray:
        """Per-pixel crack logits (B, H, W)."""
        targets = jnp.zeros(images.shape[:1], jnp.int32)
        logits, _ = self.network.apply({"params": params}, images, targets, train=train, rngs=rngs)
        return logits[..., 0]

    def loss(self, outputs: jnp.ndarray, batch: dict) -> tuple[jnp.ndarray, dict]:
        """BCE + soft Dice on the masks."""
        bce = losses.sigmoid_binary_cross_entropy(outputs, batch["mask"])
        dice = losses.soft_dice_loss(jax.nn.sigmoid(outputs), batch["mask"])
        return bce + dice, {"bce": bce, "dice_loss": dice}


SupervisedModel = ClassifierModel | SegmenterModel


def build_classifier(config: ml_collections.ConfigDict) -> ClassifierModel:
    """The classifier gets D's optimizer settings: each baseline trains like its GAN twin."""
    return ClassifierModel(make_plain_classifier(config),
                           make_optimizer(config.optimizer.discriminator, config.num_steps),
                           adversary=adversarial_training.from_config(config))


def build_segmenter(config: ml_collections.ConfigDict) -> SegmenterModel:
    """The U-Net gets G's optimizer settings."""
    return SegmenterModel(make_segmenter(config), make_optimizer(config.optimizer.generator, config.num_steps))


def adversarial_examples(model: ClassifierModel, params, images: jnp.ndarray, labels: jnp.ndarray,
                         key: jax.Array, step: jnp.ndarray) -> jnp.ndarray:
    """PGD examples against the classifier in inference mode at the budget of training step `step`
    (constants for the update, which differentiates the loss on them with respect to the parameters only)."""
    return model.adversary.attack(lambda x: model.apply(params, x), images, labels, key, step).adversarial


def init_state(model: SupervisedModel, key: jax.Array, image_shape: tuple) -> SupervisedState:
    init_key, train_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1,) + tuple(image_shape), jnp.float32))
    return SupervisedState(step=jnp.zeros((), jnp.int32), params=params, opt_state=model.tx.init(params),
                           key=train_key)


def supervised_step(state: SupervisedState, batch: dict, *, model: SupervisedModel):
    """One optimizer update on one batch (on its PGD examples when adversarially trained), with the
    same NaN guard as the GAN step."""
    dropout_key = jax.random.fold_in(state.key, state.step)
    images = batch["image"]
    if model.adversary is not None:
        images = adversarial_examples(model, state.params, images, batch["label"], jax.random.fold_in(dropout_key, 1),
                                      state.step)

    def objective(params):
        return model.loss(model.apply(params, images, train=True, rngs={"dropout": dropout_key}), batch)

    (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = model.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"loss": loss, **terms, "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
    return steps.keep_if_finite(new_state, state, metrics)


def make_supervised_step(model: SupervisedModel, mesh: Mesh, *, max_traces: int | None = None) -> Callable:
    return steps.jit_step(functools.partial(supervised_step, model=model), mesh, max_traces=max_traces)


def make_init_fn(model: SupervisedModel, config: ml_collections.ConfigDict, mesh: Mesh) -> Callable:
    image_shape = (config.data.image_size, config.data.image_size, 3)
    return jax.jit(functools.partial(init_state, model, image_shape=image_shape),
                   out_shardings=parallel.replicated(mesh))
