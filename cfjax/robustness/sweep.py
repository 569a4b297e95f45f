"""Runs attack settings over a split for one attacked model, batched and data-parallel, and turns the
per-example outputs into scores.

The budget travels in the (replicated) parameter pytree of `evaluate.SplitEvaluator`, so every setting
that shares an `AttackSpec` (and, where the loop is unrolled, an iteration count) reuses one compiled
program; the ensemble runs member by member on what is left unbroken (`ensemble_sweep`). Each batch uses
the same restart key; random starts still differ per example.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from cfjax import attacks, evaluate
from cfjax.kinds import Readout
from cfjax.models import p_fake, predict_class
from cfjax.robustness import metrics
from cfjax.robustness.ensemble_sweep import EnsembleSweep
from cfjax.robustness.progress import SweepProgress
from cfjax.robustness.protocols import AttackSetting


def _clean_batch(params, batch, *, apply_fn):
    return {"logits": apply_fn(params, batch["image"])}


def _attack_batch(params, batch, *, source_apply, target_apply, spec, static_steps):
    """PGD against the source model; the target (the same model, or another for a transfer attack) is scored."""
    images = batch["image"]
    result = attacks.pgd(lambda x: source_apply(params["source"], x), images, batch["label"], params["key"],
                         spec=spec, epsilon=params["epsilon"], step_size=params["step_size"],
                         num_steps=static_steps if spec.unrolled else params["num_steps"])
    return {"logits": target_apply(params["target"], result.adversarial),
            "distance": attacks.distance(images, result.adversarial, spec.norm)}


class ModelSweep:
    """Attacks one model (or transfers from a source model onto it) over `data`."""

    def __init__(self, target: Readout, data: dict, *, batch_size: int, mesh: Mesh, key: jax.Array,
                 adaptive_weight: float, source: Readout | None = None, clean: dict | None = None,
                 progress: SweepProgress | None = None):
        self.target, self.source = target, source or target
        self.data, self.batch_size, self.mesh, self.key = data, batch_size, mesh, key
        self.adaptive_weight = adaptive_weight
        self.progress = progress or SweepProgress(None, {})
        self._evaluators, self._ensembles, self._done = {}, {}, {}
        self._scorer = self._evaluator(functools.partial(_clean_batch, apply_fn=target.apply_fn))
        self.clean = clean if clean is not None else self._scorer.run(target.params)

    def _evaluator(self, batch_fn):
        return evaluate.SplitEvaluator(self.data, batch_fn, batch_size=self.batch_size, mesh=self.mesh,
                                       fields=("image", "label"))

    def outputs(self, setting: AttackSetting) -> dict:
        """Per-example adversarial logits and distances (settings that differ only by group run once; those
        an interrupted run finished are read back from `progress`)."""
        identity = dataclasses.replace(setting, group="")
        if identity not in self._done:
            saved = self.progress.load(self.target.name, self.source.name, identity)
            if saved is not None:
                self._done[identity] = saved
                return saved
            spec = setting.spec(self.source.num_classes, self.adaptive_weight)
            if isinstance(spec, attacks.EnsembleSpec):  # hours on a CPU: resumable batch by batch
                where = (self.target.name, self.source.name, identity)
                stage, ensemble = self.progress.load_stage(*where), self._ensemble(spec)
                resumes_at = ensemble.resume_point(stage)
                if resumes_at is not None and jax.process_index() == 0:
                    print(f"cfjax: attack {self.target.name}: {setting.label()}: resumes at {resumes_at}", flush=True)
                self._done[identity] = ensemble.run(
                    self.key, setting.epsilon, state=stage, save=lambda state: self.progress.save_stage(*where, state))
            else:
                self._done[identity] = self._pgd(spec, setting)
            self.progress.save(self.target.name, self.source.name, identity, self._done[identity])
        return self._done[identity]

    def _pgd(self, spec: attacks.AttackSpec, setting: AttackSetting) -> dict:
        program = (spec, setting.iterations if spec.unrolled else None)  # see attacks.pgd on unrolling
        if program not in self._evaluators:
            self._evaluators[program] = self._evaluator(functools.partial(
                _attack_batch, static_steps=setting.iterations, source_apply=self.source.apply_fn,
                target_apply=self.target.apply_fn, spec=spec))
        params = {"source": self.source.params, "target": self.target.params, "key": self.key,
                  "epsilon": np.float32(setting.epsilon), "step_size": np.float32(setting.step_size),
                  "num_steps": np.int32(setting.iterations)}
        return self._evaluators[program].run(params)

    def _ensemble(self, spec: attacks.EnsembleSpec) -> EnsembleSweep:
        """One sweep per spec (epsilon is traced: every budget shares its programs)."""
        if spec not in self._ensembles:
            source_clean = self.clean if self.source is self.target else self._evaluator(
                functools.partial(_clean_batch, apply_fn=self.source.apply_fn)).run(self.source.params)
            self._ensembles[spec] = EnsembleSweep(
                spec, self.source, self.data, batch_size=self.batch_size, mesh=self.mesh,
                source_clean_logits=source_clean["logits"],
                score_fn=lambda images: self._scorer.run(self.target.params, data={
                    "image": images, "label": self.data["label"]})["logits"])
        return self._ensembles[spec]

    def score(self, setting: AttackSetting) -> dict:
        out = self.outputs(setting)
        row = {**setting.describe(), **scores(self.clean["logits"], out["logits"], self.data["label"],
                                              self.target.num_classes, self.target.has_detector)}
        row["max_distance"] = float(out["distance"].max())
        if "broken_by" in out:  # the ensemble: how many examples each member broke first
            names = attacks.member_names(setting.spec(self.source.num_classes, self.adaptive_weight))
            row["broken_by"] = {name: int(np.sum(out["broken_by"] == i)) for i, name in enumerate(names)}
            if "attempted" in out:  # outputs saved before the sweep attacked only what was left lack it
                row["attempted"] = dict(zip(names, map(int, out["attempted"])))
        if self.source is not self.target:
            row["source"] = self.source.name
        return row


def _p_fake(logits: np.ndarray) -> np.ndarray:
    return np.asarray(p_fake(jnp.asarray(logits)))


def scores(clean_logits: np.ndarray, adversarial_logits: np.ndarray, labels: np.ndarray, num_classes: int,
           has_detector: bool) -> dict:
    """Robust accuracy and F1, and how well uncertainty separates adversarial from clean inputs: over every
    attacked input ("clean_vs_adversarial"), and over the attacks that succeeded ("clean_vs_successful": the
    adversarial inputs the attack turned from right to wrong against the clean inputs classified right). The
    second is the detection question that matters (a failed attack needs no flag), and the only meaningful one
    for the ensemble, which returns the clean image where every member failed (docs/robustness.md)."""
    predicted = np.asarray(predict_class(adversarial_logits, num_classes))
    right = np.asarray(predict_class(clean_logits, num_classes)) == labels
    successful = right & (predicted != labels)
    row = {"accuracy": metrics.accuracy(predicted, labels), "f1": metrics.f1(predicted, labels, num_classes),
           "num_successful": int(successful.sum())}
    uncertainties = {"max_softmax": lambda logits: metrics.max_softmax_uncertainty(logits[:, :num_classes])}
    if has_detector:
        uncertainties["p_fake"] = _p_fake
        row["mean_p_fake"] = float(_p_fake(adversarial_logits).mean())
    for name, uncertainty in uncertainties.items():
        on_adversarial, on_clean = uncertainty(adversarial_logits), uncertainty(clean_logits)
        row[f"auroc_{name}_clean_vs_adversarial"] = metrics.auroc(on_adversarial, on_clean)
        row[f"auroc_{name}_clean_vs_successful"] = metrics.auroc(on_adversarial[successful], on_clean[right])
    return row


def clean_scores(clean_logits: np.ndarray, labels: np.ndarray, num_classes: int, has_detector: bool,
                 mixed_logits: np.ndarray | None = None) -> dict:
    """Clean accuracy and F1; uncertainty (p_fake for D, 1 - max softmax for all) as a detector of wrong
    predictions, with risk-coverage curves on the clean split and on clean + adversarial examples."""
    class_logits = clean_logits[:, :num_classes]
    predicted = np.asarray(predict_class(clean_logits, num_classes))
    correct = predicted == labels
    row = {"accuracy": metrics.accuracy(predicted, labels), "f1": metrics.f1(predicted, labels, num_classes)}
    uncertainties = {"max_softmax": metrics.max_softmax_uncertainty}
    if has_detector:
        uncertainties["p_fake"] = _p_fake
        row["mean_p_fake"] = float(_p_fake(clean_logits).mean())
    curves = {}
    for name, uncertainty in uncertainties.items():
        u = uncertainty(clean_logits if name == "p_fake" else class_logits)
        row[f"auroc_{name}_wrong_vs_correct"] = metrics.auroc(u[~correct], u[correct])
        curves[f"{name}_clean"] = metrics.risk_coverage(u, correct)
        if mixed_logits is not None:
            both = np.concatenate([clean_logits, mixed_logits])
            both_correct = np.concatenate([correct, np.asarray(predict_class(mixed_logits, num_classes)) == labels])
            curves[f"{name}_clean_and_adversarial"] = metrics.risk_coverage(
                uncertainty(both if name == "p_fake" else both[:, :num_classes]), both_correct)
    row["aurc"] = {name: curve["aurc"] for name, curve in curves.items()}
    return {"scores": row, "risk_coverage": curves}
