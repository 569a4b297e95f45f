"""The robust counterfactual GAN (`config.model = "robust_gan"`): the GAN of `kinds.gan` whose D is
adversarially trained inside the GAN step. D learns PGD examples of the real images with their true
class (made against its class readout at the budget of `config.adversarial_training`, ramped as for
the PGD-trained classifier); G's counterfactuals stay "fake" and G's adversarial term is against this
D. With `adversarial_training.also_fake` the PGD examples are also learned as "fake" (a detector).

Everything after training (evaluation, figures, `cfjax.restore`, `--mode=explain`, `--mode=attack`) is
the GAN's: only the networks' training differs, and the readouts are named apart ("robust_D",
"robust_G_head"; "detector_D", "detector_G_head" with `also_fake`) so tables that gather several runs keep
them in their own rows."""

import dataclasses
from typing import ClassVar

import ml_collections

from cfjax import adversarial_training, steps
from cfjax.kinds.base import Readout
from cfjax.kinds.gan import GanKind


class RobustGanKind(GanKind):
    """G and an adversarially trained D, trained by `steps.gan_step` with `GanModels.adversary` set."""

    name: ClassVar[str] = "robust_gan"
    progress_fields: ClassVar[tuple] = GanKind.progress_fields + (("adv", "d_acc_adversarial"),)

    @staticmethod
    def build_models(config: ml_collections.ConfigDict) -> steps.GanModels:
        return steps.build_gan_models(config, adversary=adversarial_training.from_config(config))

    def readouts(self, params) -> list[Readout]:
        prefix = "detector" if self.config.adversarial_training.also_fake else "robust"
        return [dataclasses.replace(readout, name=f"{prefix}_{readout.name}") for readout in super().readouts(params)]
