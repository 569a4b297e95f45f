"""The attacks `--mode=attack` runs, read from `config.attack`:

* "paper": the paper's protocol, L-inf PGD with 10 iterations of step alpha and budget 10 alpha;
* "linf" / "l2": fixed budgets, step 2.5 epsilon / iterations (Madry et al.);
* "ensemble": the AutoAttack-style ensemble (`cfjax.attacks.autoattack`) at every L-inf budget (or those of
  `ensemble_epsilons_255`);
* gradient-masking checks at one L-inf budget: "margin" (CW loss instead of CE), "strong" (the
  ensemble, or more PGD iterations and restarts) and, for D, "adaptive" (a wrong real class must
  outscore the true class and "fake": the detector is attacked with the classifier) and
  "adaptive_ensemble" (the ensemble against that joint decision).

PGD starts at a uniform random point of the ball; the budget is traced, so each group compiles once.
"""

import dataclasses

import ml_collections

from cfjax.attacks import AttackSpec, EnsembleSpec


@dataclasses.dataclass(frozen=True)
class AttackSetting:
    """One point of a sweep (plotted against alpha for "paper", against epsilon otherwise)."""

    group: str
    norm: str
    epsilon: float
    step_size: float
    iterations: int
    loss: str = "ce"
    restarts: int = 1
    adaptive: bool = False
    attack: str = "pgd"  # or "ensemble": then `iterations` is APGD's and FAB's, and the step size unused
    targets: int = 0  # the ensemble's target classes
    queries: int = 0  # the ensemble's Square queries

    def spec(self, num_classes: int, adaptive_weight: float) -> AttackSpec | EnsembleSpec:
        if self.attack == "ensemble":
            return EnsembleSpec(num_classes=num_classes, joint=self.adaptive, iterations=self.iterations,
                                targets=self.targets, queries=self.queries)
        return AttackSpec(num_classes=num_classes, norm=self.norm, loss=self.loss, start="uniform",
                          restarts=self.restarts, detector_weight=adaptive_weight if self.adaptive else 0.0)

    def describe(self) -> dict:
        return dataclasses.asdict(self)

    def label(self) -> str:
        """How progress lines name it: "linf eps=4/255", "ensemble linf eps=2/255", "l2 eps=0.5"."""
        budget = f"eps={self.epsilon * 255:g}/255" if self.norm == "linf" else f"eps={self.epsilon:g}"
        return f"{self.norm} {budget}" if self.group in (self.norm, "") else f"{self.group} {self.norm} {budget}"


def _madry(group: str, norm: str, epsilon: float, iterations: int, **fields) -> AttackSetting:
    return AttackSetting(group, norm, epsilon, 2.5 * epsilon / iterations, iterations, **fields)


def _ensemble(group: str, epsilon: float, attack: ml_collections.ConfigDict, adaptive: bool = False) -> AttackSetting:
    return AttackSetting(group, "linf", epsilon, 0.0, attack.ensemble_iterations, adaptive=adaptive, attack="ensemble",
                         targets=attack.ensemble_targets, queries=attack.ensemble_queries)


def sweep_settings(attack: ml_collections.ConfigDict) -> list[AttackSetting]:
    """The paper's protocol and the fixed-budget sweeps (PGD, then the ensemble), in plotting order."""
    settings = [AttackSetting("paper", "linf", 10 * alpha / 255, alpha / 255, attack.paper_iterations)
                for alpha in attack.paper_step_sizes_255]
    settings += [_madry("linf", "linf", eps / 255, attack.iterations, restarts=attack.restarts)
                 for eps in attack.linf_epsilons_255]
    settings += [_madry("l2", "l2", eps, attack.iterations, restarts=attack.restarts) for eps in attack.l2_epsilons]
    if attack.ensemble:
        budgets = attack.ensemble_epsilons_255 or attack.linf_epsilons_255
        settings += [_ensemble("ensemble", eps / 255, attack) for eps in budgets]
    return settings


def check_settings(attack: ml_collections.ConfigDict, has_detector: bool) -> list[AttackSetting]:
    """The gradient-masking checks at `check_epsilon_255`, each to be compared with the plain L-inf attack."""
    eps = attack.check_epsilon_255 / 255
    strong = (_ensemble("strong", eps, attack) if attack.strong == "ensemble"
              else _madry("strong", "linf", eps, attack.strong_iterations, restarts=attack.strong_restarts))
    settings = [
        _madry("reference", "linf", eps, attack.iterations, restarts=attack.restarts),
        _madry("margin", "linf", eps, attack.iterations, loss="margin", restarts=attack.restarts),
        strong,
    ]
    if has_detector:
        settings.append(_madry("adaptive", "linf", eps, attack.iterations, loss="joint_margin",
                               restarts=attack.restarts, adaptive=True))
        if attack.ensemble:
            settings.append(_ensemble("adaptive_ensemble", eps, attack, adaptive=True))
    return settings
