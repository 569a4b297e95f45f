"""The supervised baselines the GAN is measured against, each trained by `supervised.supervised_step`:

* `ClassifierKind` (`config.model = "classifier"`): D's backbone with K outputs, trained on labels
  (optionally on PGD examples: the standard defence); restored, it classifies, is explained by
  attributions and is attacked;
* `SegmenterKind` (`config.model = "segmenter"`): G's U-Net trained on the masks, the supervised
  ceiling of the counterfactual masks; restored, its crack probability is its saliency.
"""

from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections

from cfjax import evaluate, supervised
from cfjax.errors import ConfigError
from cfjax.kinds.base import Readout, SaliencyMethods
from cfjax.masks import attribution, maps, scoring
from cfjax.metric_writer import MetricWriter


class _SupervisedKind:
    """One network trained on one loss: what the two baselines share."""

    needs_masks: ClassVar[bool] = False
    inference_fields: ClassVar[tuple] = ("step", "params")
    mask_threshold: ClassVar[float | None] = None

    def __init__(self, config: ml_collections.ConfigDict, mesh, model: supervised.SupervisedModel):
        self.config, self.mesh, self.model = config, mesh, model
        self.init_state = supervised.make_init_fn(model, config, mesh)
        self.train_step = supervised.make_supervised_step(model, mesh)

    def _evaluate_batch(self, params, batch) -> dict:
        raise NotImplementedError

    def attach(self, data: dict, workdir: str, writer: MetricWriter) -> None:
        self.evaluators = {split: evaluate.SplitEvaluator(data[split], self._evaluate_batch,
                                                          batch_size=self.config.eval.batch_size, mesh=self.mesh)
                           for split in data}

    def evaluate(self, state, split: str) -> dict:
        return self.evaluators[split].run(state.params)

    def write_images(self, step: int, state) -> None:
        """Baselines draw no training figures; `--mode=explain` draws their masks and attributions."""

    def inference_params(self, fields: dict):
        return fields["params"]


class ClassifierKind(_SupervisedKind):
    """The plain classifier, or the PGD-trained one when `adversarial_training.epsilon` > 0."""

    name: ClassVar[str] = "classifier"
    progress_fields: ClassVar[tuple] = (("loss", "loss"), ("acc", "acc"))
    offers: ClassVar[tuple] = ("classify", "probabilities")

    def __init__(self, config: ml_collections.ConfigDict, mesh):
        super().__init__(config, mesh, supervised.build_classifier(config))

    def _evaluate_batch(self, params, batch) -> dict:
        return {"label": batch["label"], "pred": jnp.argmax(self.model.apply(params, batch["image"]), -1)}

    def inference_functions(self) -> dict:
        return {"classify": lambda params, x, t: jnp.argmax(self.model.apply(params, x), -1),
                "probabilities": lambda params, x, t: jax.nn.softmax(self.model.apply(params, x), -1)}

    def saliency_methods(self) -> SaliencyMethods:
        """Grad-CAM, input gradients and integrated gradients on its class logit."""
        k, ig_steps = self.config.num_classes, self.config.explain.ig_steps

        def saliency_maps(params, images, labels):
            classes = maps.explained_classes(self.model.apply(params, images), labels)
            return attribution.attribution_maps("classifier_", self.model.network, params, images, classes, k,
                                                ig_steps), {}

        names = ("classifier_grad_cam", "classifier_gradients", "classifier_integrated_gradients")
        return SaliencyMethods(names, saliency_maps, draws_counterfactual=False)

    def readouts(self, params) -> list[Readout]:
        name = "adversarial_classifier" if self.model.adversary is not None else "classifier"
        return [Readout(name, lambda p, x: self.model.apply(p, x), params, self.config.num_classes)]


class SegmenterKind(_SupervisedKind):
    """The supervised U-Net: its masks are its crack probability above 0.5."""

    name: ClassVar[str] = "segmenter"
    needs_masks: ClassVar[bool] = True
    progress_fields: ClassVar[tuple] = (("bce", "bce"), ("dice", "dice_loss"))
    offers: ClassVar[tuple] = ("saliency", "mask")
    mask_threshold: ClassVar[float | None] = 0.5

    def __init__(self, config: ml_collections.ConfigDict, mesh):
        super().__init__(config, mesh, supervised.build_segmenter(config))

    def _probability(self, params, images):
        return jax.nn.sigmoid(self.model.apply(params, images))

    def _evaluate_batch(self, params, batch) -> dict:
        scores = scoring.score_batch({"segmenter": self._probability(params, batch["image"])}, batch["mask"],
                                     grid=evaluate.threshold_grid(self.config))
        return {"label": batch["label"], **scores}

    def inference_functions(self) -> dict:
        return {"saliency": lambda params, x, t: self._probability(params, x)}

    def saliency_methods(self) -> SaliencyMethods:
        return SaliencyMethods(("segmenter",), lambda params, images, labels: (
            {"segmenter": self._probability(params, images)}, {}), draws_counterfactual=False)

    def readouts(self, params) -> list[Readout]:
        raise ConfigError(f"config.model={self.name!r}: a segmentation run has no classifier to attack; "
                          "attack a GAN run (D, G's head) or a classifier run")
