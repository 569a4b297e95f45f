"""What `train_and_evaluate` trains, chosen by `config.model`: the counterfactual GAN ("gan"), or one of
its baselines, the plain classifier ("classifier") and the supervised segmentation U-Net ("segmenter").

A task owns its networks, its jitted step, its evaluators and its figures; the training loop in
`train.py` (checkpoints, logging, resumption, the NaN guard) is the same for all three.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cfjax import evaluate, steps, supervised, visualize
from cfjax.config.validation import MODELS  # noqa: F401  (re-exported: the choices of config.model)
from cfjax.explain import metrics
from cfjax.metric_writer import MetricWriter
from cfjax.models import make_discriminator, make_generator
from cfjax.optim import make_optimizer


def model_kind(config: ml_collections.ConfigDict) -> str:
    """`config.model` (runs saved before the field existed are GANs: `cfjax.config.upgrade_config`)."""
    return config.model


def build_gan_models(config: ml_collections.ConfigDict) -> steps.GanModels:
    """G, D and their optimizers as described by the config."""
    return steps.GanModels(
        generator=make_generator(config),
        discriminator=make_discriminator(config),
        g_tx=make_optimizer(config.optimizer.generator, config.num_steps),
        d_tx=make_optimizer(config.optimizer.discriminator, config.num_steps),
    )


class GanTask:
    """The counterfactual GAN: G and D trained together, scored by flip rate and mask IoU."""

    progress_fields = (("d", "d_loss"), ("g", "g_loss"), ("flip", "flip_rate"), ("acc", "d_acc_real"))
    needs_masks = False

    def __init__(self, config: ml_collections.ConfigDict, mesh):
        self.config, self.mesh = config, mesh
        self.models = build_gan_models(config)
        self.init_state = steps.make_init_fn(self.models, config, mesh)
        self.train_step = steps.make_gan_step(self.models, config, mesh)

    def attach(self, data: dict, workdir: str, writer: MetricWriter) -> None:
        """Evaluators for the validation and test arrays, and the figure writer."""
        self.evaluators = {
            split: evaluate.CounterfactualEvaluator(data[split], generator=self.models.generator,
                                                    discriminator=self.models.discriminator,
                                                    config=self.config, mesh=self.mesh)
            for split in data
        }
        self.images = _ImageLogger(data["validation"], self.models.generator, self.config, workdir, writer)

    def evaluate(self, state, split: str) -> dict:
        return self.evaluators[split].run(state.g_ema_params, state.d_params)

    def write_images(self, step: int, state) -> None:
        self.images.write(step, state.g_ema_params)

    @property
    def thresholds(self):
        return self.evaluators["test"].thresholds


class SupervisedTask:
    """A baseline trained on labels (classifier) or masks (segmenter), scored by accuracy or mask IoU."""

    def __init__(self, config: ml_collections.ConfigDict, mesh):
        self.config, self.mesh = config, mesh
        self.model = supervised.build_model(config)
        self.needs_masks = self.model.kind == "segmenter"
        self.progress_fields = (("loss", "loss"), ("acc", "acc")) if not self.needs_masks else (
            ("bce", "bce"), ("dice", "dice_loss"))
        self.init_state = supervised.make_init_fn(self.model, config, mesh)
        self.train_step = supervised.make_supervised_step(self.model, mesh)
        self.thresholds = metrics.threshold_grid(config.eval.num_thresholds)

    def attach(self, data: dict, workdir: str, writer: MetricWriter) -> None:
        batch_fn = functools.partial(_supervised_batch, model=self.model, thresholds=self.thresholds)
        self.evaluators = {split: evaluate.SplitEvaluator(data[split], batch_fn, batch_size=self.config.eval.batch_size,
                                                          mesh=self.mesh)
                           for split in data}

    def evaluate(self, state, split: str) -> dict:
        return self.evaluators[split].run(state.params)

    def write_images(self, step: int, state) -> None:
        """Baselines draw no training figures; `--mode=explain` draws their masks and attributions."""


def _supervised_batch(params, batch, *, model, thresholds):
    outputs = supervised.apply_model(model, params, batch["image"])
    if model.kind == "classifier":
        return {"label": batch["label"], "pred": jnp.argmax(outputs, -1)}
    inter, union = metrics.iou_counts(jax.nn.sigmoid(outputs), batch["mask"], thresholds)
    return {"label": batch["label"], "segmenter_intersection": inter, "segmenter_union": union}


def make_task(config: ml_collections.ConfigDict, mesh):
    """The task `config.model` names."""
    return GanTask(config, mesh) if model_kind(config) == "gan" else SupervisedTask(config, mesh)


class _ImageLogger:
    """Writes the per-class counterfactual grids from a fixed set of validation images."""

    def __init__(self, validation: dict, generator, config, workdir: str, writer: MetricWriter):
        self.directory = os.path.join(workdir, "images")
        self.writer = writer
        self.per_class = []
        for k in range(config.num_classes):
            rows = np.flatnonzero(validation["label"] == k)[: config.eval.num_image_rows]
            self.per_class.append({name: validation[name][rows] for name in ("image", "mask", "label")})
        self._counterfactual = jax.jit(
            lambda params, x, y: generator.apply({"params": params}, x, evaluate.evaluation_targets(y))[0]
        )

    def write(self, step: int, g_params) -> list[str]:
        os.makedirs(self.directory, exist_ok=True)
        paths = []
        for k, examples in enumerate(self.per_class):
            if not len(examples["label"]):
                continue
            x_hat = self._counterfactual(g_params, examples["image"], examples["label"])
            grid = visualize.counterfactual_grid(examples["image"], np.asarray(x_hat), examples["mask"])
            path = os.path.join(self.directory, f"step_{step:06d}_class{k}.png")
            if jax.process_index() == 0:
                visualize.save_png(path, grid)
                self.writer.image(step, f"counterfactuals/class{k}", grid)
            paths.append(path)
        return paths
