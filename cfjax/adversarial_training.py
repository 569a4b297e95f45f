"""Madry et al.'s defence as a part any train step can use: PGD examples of the batch, made against the
current parameters in inference mode, at a budget ramped up over the first steps. The PGD-trained
classifier (`supervised`) and the robust GAN's D (`steps.gan_step`) both train on them, from the same
`config.adversarial_training` fields, so both ramp epsilon the same way."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from cfjax import attacks


@dataclasses.dataclass(frozen=True)
class AdversarialTraining:
    """The training attack (static under jit: steps close over it); the budget follows the traced step."""

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

    def attack(self, logits_fn: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray, labels: jnp.ndarray,
               key: jax.Array, step: jnp.ndarray) -> attacks.AttackResult:
        """PGD on `logits_fn` (inference mode) around `images` at the budget of training step `step`. The
        decision attacked is the argmax over the first K logits: for D, its class readout, as
        `--mode=attack` attacks it. The examples are constants for the update that trains on them."""
        epsilon, step_size = self.budget(step)
        return attacks.pgd(logits_fn, images, labels, key, spec=self.spec, epsilon=epsilon, step_size=step_size,
                           num_steps=self.num_steps)


def from_config(config: ml_collections.ConfigDict) -> AdversarialTraining | None:
    """The training attack of `config.adversarial_training`: L-inf or L2 PGD from a uniform random start
    against the K class logits; None while epsilon is 0 (off)."""
    settings = config.adversarial_training
    if not settings.epsilon:
        return None
    spec = attacks.AttackSpec(num_classes=config.num_classes, norm=settings.norm, start="uniform")
    return AdversarialTraining(spec, float(settings.epsilon), float(settings.step_size), int(settings.num_steps),
                               int(settings.warmup_steps))
