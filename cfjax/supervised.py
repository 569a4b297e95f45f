"""The supervised baselines as pure steps: a plain classifier (D's backbone, K outputs, class labels),
optionally PGD-trained (the standard defence D's robustness is compared with), and a segmentation
U-Net (G's architecture, trained on the masks: the ceiling the counterfactual masks are measured
against)."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cfjax import attacks, losses, parallel, steps
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
class AdversarialTraining:
    """Madry et al.'s defence: train on PGD examples made against the current parameters."""

    spec: attacks.AttackSpec
    epsilon: float
    step_size: float
    num_steps: int
    warmup_steps: int = 0

    def budget(self, step: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(epsilon, step size) at `step`: both ramped linearly from 0 over `warmup_steps`. From scratch at
        the full budget the classifier can stay at chance (it did on the fruit task at 8/255)."""
        ramp = 1.0 if not self.warmup_steps else jnp.minimum(1.0, (step + 1) / self.warmup_steps)
        return self.epsilon * ramp, self.step_size * ramp


@flax.struct.dataclass
class SupervisedModel:
    """The network and its optimizer (static under jit); `adversary` set for PGD training."""

    network: Any = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    kind: str = flax.struct.field(pytree_node=False, default="classifier")
    adversary: AdversarialTraining | None = flax.struct.field(pytree_node=False, default=None)


def build_model(config: ml_collections.ConfigDict) -> SupervisedModel:
    """The classifier gets D's optimizer settings, the U-Net G's: each baseline trains like its GAN twin."""
    if config.model == "classifier":
        return SupervisedModel(make_plain_classifier(config),
                               make_optimizer(config.optimizer.discriminator, config.num_steps), "classifier",
                               adversary=_adversary(config))
    return SupervisedModel(make_segmenter(config), make_optimizer(config.optimizer.generator, config.num_steps),
                           "segmenter")


def _adversary(config: ml_collections.ConfigDict) -> AdversarialTraining | None:
    settings = config.adversarial_training
    if not settings.epsilon:
        return None
    spec = attacks.AttackSpec(num_classes=config.num_classes, norm=settings.norm, start="uniform")
    return AdversarialTraining(spec, float(settings.epsilon), float(settings.step_size), int(settings.num_steps),
                               int(settings.warmup_steps))


def adversarial_examples(model: SupervisedModel, params, images: jnp.ndarray, labels: jnp.ndarray,
                         key: jax.Array, step: jnp.ndarray) -> jnp.ndarray:
    """PGD examples against the classifier in inference mode at the budget of training step `step`
    (constants for the update, which differentiates the loss on them with respect to the parameters only)."""
    adversary = model.adversary
    epsilon, step_size = adversary.budget(step)
    result = attacks.pgd(lambda x: apply_model(model, params, x), images, labels, key, spec=adversary.spec,
                         epsilon=epsilon, step_size=step_size, num_steps=adversary.num_steps)
    return result.adversarial


def apply_model(model: SupervisedModel, params, images: jnp.ndarray, *, train: bool = False, rngs=None):
    """Class logits (B, K) of the classifier, or per-pixel crack logits (B, H, W) of the U-Net."""
    if model.kind == "classifier":
        return model.network.apply({"params": params}, images, train=train, rngs=rngs)
    targets = jnp.zeros(images.shape[:1], jnp.int32)
    logits, _ = model.network.apply({"params": params}, images, targets, train=train, rngs=rngs)
    return logits[..., 0]


def init_state(model: SupervisedModel, key: jax.Array, image_shape: tuple) -> SupervisedState:
    init_key, train_key = jax.random.split(key)
    images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    if model.kind == "classifier":
        params = model.network.init(init_key, images)["params"]
    else:
        params = model.network.init(init_key, images, jnp.zeros((1,), jnp.int32))["params"]
    return SupervisedState(step=jnp.zeros((), jnp.int32), params=params, opt_state=model.tx.init(params),
                           key=train_key)


def supervised_loss(model: SupervisedModel, outputs: jnp.ndarray, batch: dict) -> tuple[jnp.ndarray, dict]:
    """Cross-entropy for the classifier; BCE + soft Dice on the masks for the U-Net."""
    if model.kind == "classifier":
        loss = losses.cross_entropy(outputs, batch["label"])
        return loss, {"ce": loss, "acc": (jnp.argmax(outputs, -1) == batch["label"]).mean()}
    bce = losses.sigmoid_binary_cross_entropy(outputs, batch["mask"])
    dice = losses.soft_dice_loss(jax.nn.sigmoid(outputs), batch["mask"])
    return bce + dice, {"bce": bce, "dice_loss": dice}


def supervised_step(state: SupervisedState, batch: dict, *, model: SupervisedModel):
    """One optimizer update on one batch (on its PGD examples when adversarially trained), with the
    same NaN guard as the GAN step."""
    dropout_key = jax.random.fold_in(state.key, state.step)
    images = batch["image"]
    if model.adversary is not None:
        images = adversarial_examples(model, state.params, images, batch["label"], jax.random.fold_in(dropout_key, 1),
                                      state.step)

    def objective(params):
        outputs = apply_model(model, params, images, train=True, rngs={"dropout": dropout_key})
        return supervised_loss(model, outputs, batch)

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
