"""A run's saliency maps scored against ground-truth masks, every threshold tuned on the run's validation split and
frozen before the images being explained are seen: the part of `--mode=explain` that turns maps into numbers
(docs/explaining.md)."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cfjax import evaluate
from cfjax.masks import scoring, thin
from cfjax.saved_runs import LoadedRun

DEFAULT_TOP_K_PERCENT = 2.0  # when neither the config nor a validation split gives one


class MaskScorer:
    """Scores every saliency method of `run` (and the thin-mask variants of its first) on batches of a split or on
    whole images. Building one scores the validation split (when there is one) and freezes its tuned thresholds."""

    def __init__(self, run: LoadedRun, methods, config: ml_collections.ConfigDict, validation: dict | None):
        self.run, self.methods, self.config = run, methods, config
        self.grid = evaluate.threshold_grid(config)
        self.top_k_fraction = top_k_fraction(config, validation)
        rules = scoring.PerImageRules(fixed_fraction=config.explain.fixed_fraction,
                                      top_k_fraction=self.top_k_fraction)
        tolerances = scoring.Tolerances(f1=config.explain.tolerance, centerline=config.explain.centerline_tolerance)
        self._score = functools.partial(scoring.score_batch, grid=self.grid, per_image=rules,
                                        num_bins=config.explain.histogram_bins, tolerances=tolerances)
        self.names = methods.names + thin.variant_names(methods.names[0], methods.draws_counterfactual,
                                                        config.explain)
        first = methods.names[0]

        def score_split(params_and_frozen, batch):
            params, frozen = params_and_frozen  # frozen: {method: tuned threshold} for clIoU
            maps, extras = methods.maps(params, batch["image"], batch["label"])
            maps.update(thin.variant_maps(maps, first, batch["image"], extras.get("counterfactual_image"), config))
            return self._score(maps, batch["mask"], frozen=frozen)

        self._evaluator = functools.partial(evaluate.SplitEvaluator, batch_fn=score_split,
                                            batch_size=config.eval.batch_size, mesh=run.mesh)
        # clIoU is counted at the threshold validation froze, so validation is scored first with +inf (nothing
        # predicted, nothing to thin): the same pytree, so the later pass reuses its compiled function.
        nothing = {name: jnp.float32(jnp.inf) for name in self.names}
        self.validation_scores = (self._evaluator(validation).run((run.params, nothing))
                                  if validation is not None else None)
        tuned = ({} if self.validation_scores is None else
                 scoring.tuned_thresholds(self.validation_scores, self.validation_scores["has_mask"], self.names,
                                          self.grid))
        self.frozen = {name: jnp.float32(tuned.get(name, jnp.inf)) for name in self.names}

    def on_split(self, data: dict) -> dict:
        """Per-image scores of a split's arrays, in batches on the run's mesh."""
        return self._evaluator(data).run((self.run.params, self.frozen))

    def on_images(self, examples: list[dict]) -> dict:
        """Per-image scores of whole images one at a time (they may differ in size), from the maps placed on each
        (`example["maps"]`, `example["counterfactual"]`), with the thin-mask variants made from those; one compile
        per distinct size."""
        first, config = self.methods.names[0], self.config
        score = functools.partial(self._score, frozen=self.frozen)

        def score_one_image(maps, image, counterfactual, mask):
            return score({**maps, **thin.variant_maps(maps, first, image, counterfactual, config)}, mask)

        score_one = jax.jit(score_one_image)
        per_image = []
        for example in examples:
            maps = {name: m[None] for name, m in example["maps"].items()}
            counterfactual = example.get("counterfactual")
            per_image.append(jax.tree.map(np.asarray, score_one(
                maps, example["image"][None], None if counterfactual is None else counterfactual[None],
                example["mask"][None])))
        scores = {name: np.concatenate([s[name] for s in per_image]) for name in per_image[0]}
        scores["has_mask"] = np.ones(len(examples), bool)
        return scores

    def summary(self, scores: dict) -> dict:
        """{method: its thresholdings, tuned and per image, and the curve-based scores} over the damaged images."""
        validation = self.validation_scores
        return scoring.summarize(scores, scores["has_mask"], self.names, self.grid, validation,
                                 None if validation is None else validation["has_mask"])

    def settings(self) -> dict:
        """The scoring settings explain.json records (a table re-runs an explanation whose settings differ)."""
        explain = self.config.explain
        return {"fixed_fraction": explain.fixed_fraction, "top_k_percent": 100 * self.top_k_fraction,
                "saliency": self.methods.saliency_settings(self.config), "ig_steps": explain.ig_steps,
                "tolerance": explain.tolerance, "centerline_tolerance": explain.centerline_tolerance,
                "thin_nms": explain.thin_nms, "thin_reduce": explain.thin_reduce}


def top_k_fraction(config: ml_collections.ConfigDict, validation: dict | None) -> float:
    """k for top-k: the config's, else the mean damage share of damaged validation images."""
    if config.explain.top_k_percent > 0:
        return config.explain.top_k_percent / 100.0
    if validation is not None:
        return float(validation["mask"].mean(axis=(1, 2)).mean())
    return DEFAULT_TOP_K_PERCENT / 100.0
