"""Adversarial attacks on any `logits_fn(images in [0, 1]) -> logits`: PGD and its parts, APGD, FAB-T,
Square, and their AutoAttack-style ensemble."""

from cfjax.attacks.auto_pgd import apgd
from cfjax.attacks.ensemble import (
    MEMBERS,
    EnsembleResult,
    EnsembleSpec,
    autoattack,
    make_ensemble,
    member_key,
    member_names,
    run_member,
)
from cfjax.attacks.fab import fab_targeted
from cfjax.attacks.geometry import NORMS, distance, project, steepest_ascent, uniform_start
from cfjax.attacks.objectives import LOSSES, class_loss, objective, real_log_odds, succeeded
from cfjax.attacks.pgd import STARTS, AttackResult, AttackSpec, make_attack, pgd
from cfjax.attacks.square_search import square

__all__ = [
    "NORMS", "LOSSES", "STARTS", "AttackSpec", "AttackResult", "pgd", "make_attack", "project", "distance",
    "steepest_ascent", "uniform_start", "class_loss", "objective", "real_log_odds", "succeeded",
    "apgd", "fab_targeted", "square", "MEMBERS", "EnsembleSpec", "EnsembleResult", "autoattack", "make_ensemble",
    "member_names", "member_key", "run_member",
]
