"""The counterfactual GAN (`config.model = "gan"`): G and D trained together, scored by D's accuracy,
G's flip rate and the counterfactual masks; restored, it classifies, measures p_fake, draws
counterfactuals and masks, and offers D and G's head to attack."""

import functools
import os
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cfjax import evaluate, steps, storage, visualize
from cfjax.kinds.base import Readout, SaliencyMethods
from cfjax.masks import NORMAL_CLASS, attribution, maps, scoring
from cfjax.metric_writer import MetricWriter
from cfjax.models import class_logits, p_fake, predict_class


def evaluation_targets(labels: jnp.ndarray) -> jnp.ndarray:
    """Damaged images go to the normal class (the mask we score); normal images to the next class."""
    return jnp.where(labels == NORMAL_CLASS, NORMAL_CLASS + 1, NORMAL_CLASS).astype(labels.dtype)


def counterfactual_and_map(generator, g_params, images: jnp.ndarray, targets: jnp.ndarray,
                           settings: ml_collections.ConfigDict) -> tuple:
    """((x_hat, head_logits), the counterfactual map over `settings.views`): G's edit of the images and its
    map, as every GAN evaluation, figure, explanation and prediction reads them."""
    return maps.averaged_counterfactual_map(functools.partial(generator.apply, {"params": g_params}), images,
                                            targets, settings)


def _evaluate_batch(params, batch, *, models: steps.GanModels, config: ml_collections.ConfigDict, grid):
    g_params, d_params = params
    images, labels = batch["image"], batch["label"]
    targets = evaluation_targets(labels)
    (counterfactual, head_logits), counterfactual_saliency = counterfactual_and_map(
        models.generator, g_params, images, targets, config.saliency)
    real_logits = models.discriminator.apply({"params": d_params}, images, train=False)
    cf_logits = models.discriminator.apply({"params": d_params}, counterfactual, train=False)
    k = config.num_classes
    saliency = {"counterfactual": counterfactual_saliency, **maps.baseline_maps(images, config.saliency)}
    return {
        "label": labels,
        "d_pred": predict_class(real_logits, k),
        "head_pred": jnp.argmax(head_logits, -1),
        "flipped": predict_class(cf_logits, k) == targets,
        "p_fake_real": p_fake(real_logits),
        "p_fake_counterfactual": p_fake(cf_logits),
        "edit_l1": jnp.abs(counterfactual - images).mean(axis=(1, 2, 3)),
        **scoring.score_batch(saliency, batch["mask"], grid=grid),
    }


def counterfactuals_toward_each_class(generator, discriminator, g_params, d_params, images: jnp.ndarray,
                                      labels: jnp.ndarray, num_classes: int,
                                      settings: ml_collections.ConfigDict) -> dict:
    """For every target t: x_hat_t = G(x, t), its counterfactual map and D's probability of t on x_hat_t
    (over the K real classes). The nearest target is the other class with the highest such probability
    (ties: the smaller edit). Shapes: maps (B, K, H, W), probabilities (B, K). K > 2 goes beyond the
    paper, which is binary."""
    counterfactuals, saliency, reached = [], [], []
    for target in range(num_classes):
        (x_hat, _), target_map = counterfactual_and_map(generator, g_params, images,
                                                        jnp.full(images.shape[:1], target, jnp.int32), settings)
        probabilities = jax.nn.softmax(class_logits(discriminator.apply({"params": d_params}, x_hat), num_classes))
        counterfactuals.append(x_hat)
        saliency.append(target_map)
        reached.append(probabilities[:, target])
    saliency, reached = jnp.stack(saliency, axis=1), jnp.stack(reached, axis=1)
    edit = saliency.mean(axis=(2, 3))
    # Own class excluded; among equally reachable targets, the smaller edit wins.
    score = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, reached - 1e-6 * edit)
    return {"counterfactuals": jnp.stack(counterfactuals, axis=1), "maps": saliency, "target_probability": reached,
            "edit_size": edit, "nearest": jnp.argmax(score, axis=1)}


class GanKind:
    """G (a U-Net with a classification head) and D (K classes + fake), trained by `steps.gan_step`."""

    name: ClassVar[str] = "gan"
    needs_masks: ClassVar[bool] = False
    progress_fields: ClassVar[tuple] = (("d", "d_loss"), ("g", "g_loss"), ("flip", "flip_rate"),
                                        ("acc", "d_acc_real"))
    inference_fields: ClassVar[tuple] = ("step", "g_ema_params", "d_params")  # G's EMA weights, not the raw ones
    offers: ClassVar[tuple] = ("classify", "probabilities", "p_fake", "generator_classify", "generator_probabilities",
                               "counterfactual", "saliency", "mask")
    mask_threshold: ClassVar[float | None] = None

    def __init__(self, config: ml_collections.ConfigDict, mesh):
        self.config, self.mesh = config, mesh
        self.models = self.build_models(config)
        self.init_state = steps.make_init_fn(self.models, config, mesh)
        self.train_step = steps.make_gan_step(self.models, config, mesh)

    @staticmethod
    def build_models(config: ml_collections.ConfigDict) -> steps.GanModels:
        """G, D and their optimizers (the robust GAN adds D's training attack)."""
        return steps.build_gan_models(config)

    # --- training ------------------------------------------------------------------------------------

    def attach(self, data: dict, workdir: str, writer: MetricWriter) -> None:
        batch_fn = functools.partial(_evaluate_batch, models=self.models, config=self.config,
                                     grid=evaluate.threshold_grid(self.config))
        self.evaluators = {split: evaluate.SplitEvaluator(data[split], batch_fn, batch_size=self.config.eval.batch_size,
                                                          mesh=self.mesh)
                           for split in data}
        self.images = _ImageLogger(data["validation"], self.models.generator, self.config, workdir, writer)

    def evaluate(self, state, split: str) -> dict:
        return self.evaluators[split].run((state.g_ema_params, state.d_params))

    def write_images(self, step: int, state) -> None:
        self.images.write(step, state.g_ema_params)

    # --- a restored run ------------------------------------------------------------------------------

    def inference_params(self, fields: dict) -> tuple:
        return fields["g_ema_params"], fields["d_params"]

    def _d_logits(self, params, images):
        return self.models.discriminator.apply({"params": params[1]}, images, train=False)

    def _g_outputs(self, params, images, targets):
        return self.models.generator.apply({"params": params[0]}, images, targets, train=False)

    def _counterfactual_and_map(self, params, images, targets) -> tuple:
        return counterfactual_and_map(self.models.generator, params[0], images, targets, self.config.saliency)

    def inference_functions(self) -> dict:
        k = self.config.num_classes

        def saliency(params, x, t):
            return self._counterfactual_and_map(params, x, t)[1]

        return {
            "classify": lambda params, x, t: predict_class(self._d_logits(params, x), k),
            "probabilities": lambda params, x, t: jax.nn.softmax(class_logits(self._d_logits(params, x), k), -1),
            "p_fake": lambda params, x, t: p_fake(self._d_logits(params, x)),
            "generator_classify": lambda params, x, t: jnp.argmax(self._g_outputs(params, x, t)[1], -1),
            "generator_probabilities": lambda params, x, t: jax.nn.softmax(self._g_outputs(params, x, t)[1], -1),
            "counterfactual": lambda params, x, t: self._g_outputs(params, x, t)[0],
            "saliency": saliency,
        }

    def saliency_methods(self) -> SaliencyMethods:
        """Its counterfactual masks |x - G(x, normal)|, the attributions on D's class logit, and the
        dark-pixel and local-contrast baselines."""
        config, k = self.config, self.config.num_classes

        def saliency_maps(params, images, labels):
            normal = jnp.full(images.shape[:1], NORMAL_CLASS, jnp.int32)
            (counterfactual, _), counterfactual_saliency = self._counterfactual_and_map(params, images, normal)
            classes = maps.explained_classes(class_logits(self._d_logits(params, images), k), labels)
            out = {"counterfactual": counterfactual_saliency}
            out.update(attribution.attribution_maps("d_", self.models.discriminator, params[1], images, classes, k,
                                                    config.explain.ig_steps))
            out.update(maps.baseline_maps(images, config.saliency))
            return out, {"counterfactual_image": counterfactual}

        def toward_each_class(params, images, labels):
            return counterfactuals_toward_each_class(self.models.generator, self.models.discriminator, *params, images,
                                                     labels, k, config.saliency)

        names = ("counterfactual", "d_grad_cam", "d_gradients", "d_integrated_gradients", "dark_pixels",
                 "local_contrast")
        return SaliencyMethods(names, saliency_maps, draws_counterfactual=True, toward_each_class=toward_each_class,
                               saliency_fields=tuple(config.saliency))  # the map and both baselines use them all

    def readouts(self, params) -> list[Readout]:
        """D with its hybrid readout (argmax over the first K of its K+1 logits; p_fake as uncertainty) and
        G's classification head (it reads the encoder, so it is a classifier too)."""
        g_params, d_params = params
        k = self.config.num_classes
        d_apply = lambda d, x: self.models.discriminator.apply({"params": d}, x, train=False)
        g_apply = lambda g, x: self.models.generator.apply(
            {"params": g}, x, jnp.full(x.shape[:1], NORMAL_CLASS, jnp.int32), train=False)[1]
        return [Readout("D", d_apply, d_params, k, has_detector=True), Readout("G_head", g_apply, g_params, k)]


class _ImageLogger:
    """Writes the per-class counterfactual grids from a fixed set of validation images."""

    def __init__(self, validation: dict, generator, config, workdir: str, writer: MetricWriter):
        self.directory = os.path.join(workdir, "images")
        self.writer = writer
        self.per_class = []
        for k in range(config.num_classes):
            rows = np.flatnonzero(validation["label"] == k)[: config.eval.num_image_rows]
            self.per_class.append({name: validation[name][rows] for name in ("image", "mask", "label")})

        def edit_and_map(params, x, y):
            (x_hat, _), saliency = counterfactual_and_map(generator, params, x, evaluation_targets(y), config.saliency)
            return x_hat, saliency

        self._counterfactual = jax.jit(edit_and_map)

    def write(self, step: int, g_params) -> list[str]:
        storage.make_dirs(self.directory)
        paths = []
        for k, examples in enumerate(self.per_class):
            if not len(examples["label"]):
                continue
            x_hat, saliency = self._counterfactual(g_params, examples["image"], examples["label"])
            grid = visualize.counterfactual_grid(examples["image"], np.asarray(x_hat), np.asarray(saliency),
                                                 examples["mask"])
            path = os.path.join(self.directory, f"step_{step:06d}_class{k}.png")
            if jax.process_index() == 0:
                visualize.save_png(path, grid)
                self.writer.image(step, f"counterfactuals/class{k}", grid)
            paths.append(path)
        return paths
