"""When `--mode=predict` flags a photo `abstained`: a score above a threshold τ, both chosen on the run's
validation split (docs/predicting.md#abstaining).

Two scores can rank a run's errors: D's p_fake (a GAN run's, the paper's uncertainty) and the uncertainty
of its class readout, 1 − the predicted class's probability (every run with classes). Which ranks errors
better depends on the run: the fruit detector GAN's p_fake ranks its clean errors *below* its right answers
(a colour shortcut, docs/robustness.md), so at the same target it keeps 30 % of its validation images where
1 − confidence keeps 90 %. With `score="auto"` both are tried and the one keeping more validation images at
the target wins (ties: p_fake).
"""

import ml_collections
import numpy as np

from cfjax.data import pipeline
from cfjax.errors import DataError

SCORES = ("p_fake", "uncertainty")  # uncertainty: 1 − the predicted class's probability
CHOICES = ("auto", *SCORES)


def choose_threshold(score: np.ndarray, wrong: np.ndarray) -> tuple[float | None, str, dict]:
    """Keep the images whose score is at most τ, with τ giving the largest coverage on validation whose error
    on the kept images is at most half the error on all of them. With no error on validation, τ is the
    largest validation score (only inputs stranger than every validation image abstain); when no τ halves
    the error, there is none. Returns (τ or None, the rule in words, validation figures)."""
    score, wrong = np.asarray(score, np.float64), np.asarray(wrong, bool)
    n, error = len(score), float(wrong.mean()) if len(wrong) else 0.0
    stats = {"validation_images": int(n), "validation_error": error}
    if not n:
        return None, "none: the validation split is empty", stats
    order = np.argsort(score, kind="stable")
    ordered, kept_wrong = score[order], np.cumsum(wrong[order])
    if error == 0:
        stats["coverage"] = 1.0
        return float(ordered[-1]), "validation error is 0: abstain above the largest validation score", stats
    kept_error = kept_wrong / np.arange(1, n + 1)
    separable = np.append(ordered[:-1] < ordered[1:], True)  # a threshold can keep exactly the first k
    fine = np.flatnonzero((kept_error <= error / 2) & separable)
    if not len(fine):
        stats["coverage"] = 0.0
        return None, f"none: no threshold halves the validation error ({error:.3f}) on the images it keeps", stats
    k = int(fine[-1]) + 1
    stats.update({"coverage": k / n, "kept_error": float(kept_error[k - 1])})
    return float(ordered[k - 1]), ("the largest validation coverage whose error on kept images is at most half "
                                  "the validation error of all images"), stats


def scores_offered(offers: set) -> tuple[str, ...]:
    """The scores a run with these `offers` (`RestoredRun.offers`) can abstain on."""
    return tuple(name for name, needs in (("p_fake", "p_fake"), ("uncertainty", "probabilities")) if needs in offers)


def abstain_rule(run, config: ml_collections.ConfigDict, threshold: float | None = None,
                 score: str = "auto") -> dict:
    """{"score": the score abstained on, "threshold": τ or None (abstain when the score is above τ), "rule":
    how it was chosen, and the validation figures of every score tried ("scores")}. A given `threshold`
    applies to `score`; with "auto" that is p_fake where the run offers it, else the uncertainty."""
    if score not in CHOICES:
        raise ValueError(f"abstain score {score!r}: choose from {CHOICES}")
    offered = scores_offered(set(run.offers))
    if not offered:
        return {"score": None, "threshold": None, "rule": f"none: a {run.kind} run gives no class or p_fake"}
    if score != "auto" and score not in offered:
        return {"score": None, "threshold": None, "rule": f"none: a {run.kind} run has no {score}"}
    tried = offered if score == "auto" else (score,)
    if threshold is not None:
        return {"score": tried[0], "threshold": float(threshold), "rule": "given by --abstain_threshold"}
    try:
        validation = pipeline.evaluation_arrays(config, "validation")
    except DataError as error:
        return {"score": None, "threshold": None,
                "rule": f"none: the run's validation split is unavailable here ({error})"}
    images = validation["image"]
    probabilities = np.asarray(run.probabilities(images))
    wrong = probabilities.argmax(-1) != np.asarray(validation["label"])
    values = {"p_fake": lambda: np.asarray(run.p_fake(images)), "uncertainty": lambda: 1.0 - probabilities.max(-1)}
    chosen = {name: choose_threshold(values[name](), wrong) for name in tried}
    best = max(tried, key=lambda name: chosen[name][2].get("coverage", 0.0))  # first of equals: p_fake
    best_threshold, rule, stats = chosen[best]
    if len(tried) > 1:
        rule += f"; {best} chosen over {', '.join(n for n in tried if n != best)} for keeping more validation images"
    return {"score": best, "threshold": best_threshold, "rule": rule,
            **stats, "scores": {name: {"threshold": t, **s} for name, (t, _, s) in chosen.items()}}
