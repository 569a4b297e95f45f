"""Adversarial attacks on any `logits_fn(images in [0, 1]) -> logits`: PGD and its parts."""

from cfjax.attacks.geometry import NORMS, distance, project, steepest_ascent, uniform_start
from cfjax.attacks.objectives import LOSSES, class_loss, objective, real_log_odds, succeeded
from cfjax.attacks.pgd import STARTS, AttackResult, AttackSpec, make_attack, pgd

__all__ = [
    "NORMS", "LOSSES", "STARTS", "AttackSpec", "AttackResult", "pgd", "make_attack", "project", "distance",
    "steepest_ascent", "uniform_start", "class_loss", "objective", "real_log_odds", "succeeded",
]
