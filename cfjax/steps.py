"""The GAN's train state and its jitted update (D, then G against the new D; for the robust GAN, D also
learns from PGD examples of the real images), and what every step shares: the NaN guard
(`keep_if_finite`) and the jit over the device mesh (`jit_step`)."""

import functools
from collections.abc import Callable
from typing import Any

import chex
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cfjax import losses, parallel
from cfjax.adversarial_training import AdversarialTraining
from cfjax.models import class_logits, make_discriminator, make_generator, p_fake, predict_class
from cfjax.optim import make_optimizer

Params = Any


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue bit-exactly: both networks, both optimizers, keys."""

    step: jnp.ndarray
    g_params: Params
    d_params: Params
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    g_ema_params: Params
    key: jnp.ndarray


@flax.struct.dataclass
class GanModels:
    """The two networks and their optimizers (static: hashed by identity under jit); `adversary` set, D
    also trains on PGD examples of the real images (the robust GAN)."""

    generator: Any = flax.struct.field(pytree_node=False)
    discriminator: Any = flax.struct.field(pytree_node=False)
    g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    adversary: AdversarialTraining | None = flax.struct.field(pytree_node=False, default=None)


def build_gan_models(config: ml_collections.ConfigDict, adversary: AdversarialTraining | None = None) -> GanModels:
    """G, D and their optimizers as described by the config, and D's training attack if any."""
    return GanModels(
        generator=make_generator(config),
        discriminator=make_discriminator(config),
        g_tx=make_optimizer(config.optimizer.generator, config.num_steps),
        d_tx=make_optimizer(config.optimizer.discriminator, config.num_steps),
        adversary=adversary,
    )


def init_train_state(models: GanModels, key: jax.Array, image_shape: tuple, num_classes: int) -> TrainState:
    """Fresh parameters for G and D from one key; the rest of the key drives the training steps."""
    g_key, d_key, train_key = jax.random.split(key, 3)
    images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32)
    g_params = models.generator.init(g_key, images, labels)["params"]
    d_params = models.discriminator.init(d_key, images)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_opt_state=models.g_tx.init(g_params),
        d_opt_state=models.d_tx.init(d_params),
        g_ema_params=g_params,
        key=train_key,
    )


def _generate(models, g_params, images, labels, targets, num_cycles, key, train=True):
    """x_hat = G(x, t), then `num_cycles` round trips G(., y) [-> G(., t)] for the cycle loss."""
    apply = functools.partial(models.generator.apply, train=train)
    keys = jax.random.split(key, 2 * num_cycles + 1)
    counterfactual, head_logits = apply({"params": g_params}, images, targets, rngs={"dropout": keys[0]})
    cycle_back, cycle_forward = [], []
    current = counterfactual
    for c in range(num_cycles):
        back, _ = apply({"params": g_params}, current, labels, rngs={"dropout": keys[2 * c + 1]})
        cycle_back.append(back)
        if c + 1 < num_cycles:
            current, _ = apply({"params": g_params}, back, targets, rngs={"dropout": keys[2 * c + 2]})
            cycle_forward.append(current)
    return {
        "counterfactual": counterfactual,
        "head_logits": head_logits,
        "cycle_back": cycle_back,
        "cycle_forward": cycle_forward,
    }


def _ema(ema_params, params, step, decay):
    """EMA of G's weights with a warm-up, so early evaluations are not dominated by the init."""
    rate = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema_params, params)


def _robust_inputs(models: GanModels, d_params, images, labels, key, step) -> tuple[jnp.ndarray, dict]:
    """PGD examples of the real images against D's class readout (its parameters before this update, in
    inference mode), and what they do to D: its class CE and accuracy, clean and adversarial, its
    p_fake on them, and the budget of this step."""
    d_apply = lambda x: models.discriminator.apply({"params": d_params}, x, train=False)
    result = models.adversary.attack(d_apply, images, labels, key, step)
    adversarial = jax.lax.stop_gradient(result.adversarial)
    k = models.adversary.spec.num_classes
    clean_logits, adversarial_logits = d_apply(images), d_apply(adversarial)
    metrics = {
        "adversarial_epsilon": models.adversary.budget(step)[0],
        "d_clean_class_ce": losses.cross_entropy(class_logits(clean_logits, k), labels),
        "d_adversarial_class_ce": losses.cross_entropy(class_logits(adversarial_logits, k), labels),
        "d_acc_real": (predict_class(clean_logits, k) == labels).mean(),
        "d_acc_adversarial": (predict_class(adversarial_logits, k) == labels).mean(),
        "p_fake_real": p_fake(clean_logits).mean(),
        "p_fake_adversarial": p_fake(adversarial_logits).mean(),
    }
    return adversarial, metrics


def gan_step(state: TrainState, batch: dict, *, models: GanModels, config: ml_collections.ConfigDict):
    """One D update on real and (stop-gradient) generated images, then one G update against new D.

    G's forward pass runs once: its outputs' vector-Jacobian product is kept and pulled back after
    D's update, so G's gradient sees the updated D without recomputing the U-Net.

    With `models.adversary` (the robust GAN) D learns PGD examples of the real images, made against
    it at this step's budget, with their true class in place of the clean images (Madry et al.; Rob-GAN);
    with `adversarial_training.also_fake` it learns the clean images as the plain GAN does, and the PGD
    examples both with their true class on its class readout and as "fake" (a detector).
    """
    num_classes = config.num_classes
    loss_cfg = config.loss
    images, labels = batch["image"], batch["label"]
    step_key = jax.random.fold_in(state.key, state.step)
    target_key, g_key, d_key, adv_key = jax.random.split(step_key, 4)
    targets = losses.sample_targets(target_key, labels, num_classes)

    generate = lambda p: _generate(models, p, images, labels, targets, loss_cfg.num_cycles, g_key)
    outputs, pull_back = jax.vjp(generate, state.g_params)

    fakes = [outputs["counterfactual"]]
    if loss_cfg.fake_on_cycles:
        fakes += outputs["cycle_back"] + outputs["cycle_forward"]
    fakes = [jax.lax.stop_gradient(f) for f in fakes]

    adversarial, robust_metrics, also_fake = None, {}, False
    if models.adversary is not None:  # its own key: the plain GAN's random streams stay as they were
        adversarial, robust_metrics = _robust_inputs(models, state.d_params, images, labels,
                                                     jax.random.fold_in(step_key, 4), state.step)
        also_fake = config.adversarial_training.also_fake
    learned_as_real = images if adversarial is None or also_fake else adversarial

    def d_objective(d_params):
        # One D call per image set: concatenating along the sharded batch axis would reshard.
        d_keys = jax.random.split(d_key, len(fakes) + 1)
        apply = lambda x, k: models.discriminator.apply({"params": d_params}, x, train=True, rngs={"dropout": k})
        real_logits = apply(learned_as_real, d_keys[0])
        fake_logits = [apply(fake, k) for fake, k in zip(fakes, d_keys[1:])]
        loss, terms = losses.discriminator_loss(
            real_logits, labels, fake_logits, fake_weight=loss_cfg.fake_weight
        )
        if also_fake:
            detector_logits = apply(adversarial, jax.random.fold_in(d_key, len(fakes) + 1))
            detector_weight = loss_cfg.fake_weight * config.adversarial_training.fake_weight_scale
            detector_loss, detector_terms = losses.detector_loss(detector_logits, labels, fake_weight=detector_weight)
            loss, terms = loss + detector_loss, {**terms, **detector_terms}
        return loss, (terms, real_logits)

    (d_loss, (d_terms, real_logits)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(state.d_params)
    d_updates, d_opt_state = models.d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_objective(outs):
        cf_logits = models.discriminator.apply(
            {"params": d_params}, outs["counterfactual"], train=True, rngs={"dropout": adv_key}
        )
        loss, terms = losses.generator_loss(
            cf_logits, targets, outs["head_logits"], labels, images, outs["counterfactual"], outs["cycle_back"],
            adversarial_weight=loss_cfg.adversarial_weight,
            cls_weight=loss_cfg.cls_weight,
            cycle_weight=loss_cfg.cycle_weight,
            prox_weight=loss_cfg.prox_weight,
        )
        return loss, (terms, cf_logits)

    (g_loss, (g_terms, cf_logits)), output_grads = jax.value_and_grad(g_objective, has_aux=True)(outputs)
    (g_grads,) = pull_back(output_grads)
    g_updates, g_opt_state = models.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    new_state = state.replace(
        step=state.step + 1,
        g_params=g_params,
        d_params=d_params,
        g_opt_state=g_opt_state,
        d_opt_state=d_opt_state,
        g_ema_params=_ema(state.g_ema_params, g_params, state.step, config.ema_decay),
    )
    metrics = {
        "d_loss": d_loss,
        "g_loss": g_loss,
        **d_terms,
        **g_terms,
        "d_acc_real": (predict_class(real_logits, num_classes) == labels).mean(),
        "g_head_acc": (jnp.argmax(outputs["head_logits"], -1) == labels).mean(),
        "flip_rate": (predict_class(cf_logits, num_classes) == targets).mean(),
        "p_fake_real": p_fake(real_logits).mean(),
        "p_fake_generated": p_fake(cf_logits).mean(),
        "edit_l1": jnp.abs(outputs["counterfactual"] - images).mean(),
        "g_grad_norm": optax.tree.norm(g_grads),
        "d_grad_norm": optax.tree.norm(d_grads),
        "g_param_norm": optax.tree.norm(g_params),
        "d_param_norm": optax.tree.norm(d_params),
        **robust_metrics,  # D's accuracy and p_fake on the clean images, where it learned PGD examples
    }
    return keep_if_finite(new_state, state, metrics)


def keep_if_finite(new_state, state, metrics: dict):
    """Add `metrics["finite"]`; a non-finite update is never applied: the state stays at the last good step."""
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
    metrics = {**metrics, "finite": finite}
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, metrics


def jit_step(step_fn: Callable, mesh: Mesh, *, max_traces: int | None = None) -> Callable:
    """A `(state, batch) -> (state, metrics)` step jitted over the mesh: state replicated and donated,
    batch sharded on 'data'. `max_traces` makes a recompilation an error (chex.assert_max_traces)."""
    def step(state, batch):
        return step_fn(state, batch)

    if max_traces is not None:
        step = chex.assert_max_traces(step, n=max_traces)
    return jax.jit(
        step,
        in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
        out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
        donate_argnums=0,
    )


def make_gan_step(
    models: GanModels, config: ml_collections.ConfigDict, mesh: Mesh, *, max_traces: int | None = None
) -> Callable:
    """`gan_step` jitted over the mesh (see `jit_step`)."""
    return jit_step(functools.partial(gan_step, models=models, config=config), mesh, max_traces=max_traces)


def make_init_fn(models: GanModels, config: ml_collections.ConfigDict, mesh: Mesh) -> Callable:
    """Jitted initialisation that creates the state directly replicated on the mesh."""
    image_shape = (config.data.image_size, config.data.image_size, 3)
    init = functools.partial(init_train_state, models, image_shape=image_shape, num_classes=config.num_classes)
    return jax.jit(init, out_shardings=parallel.replicated(mesh))
