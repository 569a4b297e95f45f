"""The attacks `--mode=attack` runs, read from `config.attack`:

* "paper": the paper's protocol, L-inf PGD with 10 iterations of step alpha and budget 10 alpha;
* "linf" / "l2": fixed budgets, step 2.5 epsilon / iterations (Madry et al.);
* gradient-masking checks at one L-inf budget: "margin" (CW loss instead of CE), "strong" (more
  iterations and restarts) and, for D, "adaptive" (a wrong real class must outscore the true class
  and "fake": the detector is attacked with the classifier).

All start at a uniform random point of the ball; the budget is traced, so each group compiles once.
"""

import dataclasses

import ml_collections

from cfjax.attacks import AttackSpec


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

    def spec(self, num_classes: int, adaptive_weight: float) -> AttackSpec:
        return AttackSpec(num_classes=num_classes, norm=self.norm, loss=self.loss, start="uniform",
                          restarts=self.restarts, detector_weight=adaptive_weight if self.adaptive else 0.0)

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def _madry(group: str, norm: str, epsilon: float, iterations: int, **fields) -> AttackSetting:
    return AttackSetting(group, norm, epsilon, 2.5 * epsilon / iterations, iterations, **fields)


def sweep_settings(attack: ml_collections.ConfigDict) -> list[AttackSetting]:
    """The paper's protocol and the fixed-budget sweeps, in plotting order."""
    settings = [AttackSetting("paper", "linf", 10 * alpha / 255, alpha / 255, attack.paper_iterations)
                for alpha in attack.paper_step_sizes_255]
    settings += [_madry("linf", "linf", eps / 255, attack.iterations, restarts=attack.restarts)
                 for eps in attack.linf_epsilons_255]
    settings += [_madry("l2", "l2", eps, attack.iterations, restarts=attack.restarts) for eps in attack.l2_epsilons]
    return settings


def check_settings(attack: ml_collections.ConfigDict, has_detector: bool) -> list[AttackSetting]:
    """The gradient-masking checks at `check_epsilon_255`, each to be compared with the plain L-inf attack."""
    eps = attack.check_epsilon_255 / 255
    settings = [
        _madry("reference", "linf", eps, attack.iterations, restarts=attack.restarts),
        _madry("margin", "linf", eps, attack.iterations, loss="margin", restarts=attack.restarts),
        _madry("strong", "linf", eps, attack.strong_iterations, restarts=attack.strong_restarts),
    ]
    if has_detector:
        settings.append(_madry("adaptive", "linf", eps, attack.iterations, loss="joint_margin",
                               restarts=attack.restarts, adaptive=True))
    return settings
