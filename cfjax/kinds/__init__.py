"""The kinds of run `train_and_evaluate` trains, chosen by `config.model`: the counterfactual GAN, its
robust variant (D adversarially trained) and its two baselines. Each is one class (see `base.RunKind`);
add a kind here and to `KINDS`."""

import ml_collections
from jax.sharding import Mesh

from cfjax.kinds.base import Readout, RunKind, SaliencyMethods
from cfjax.kinds.baselines import ClassifierKind, SegmenterKind
from cfjax.kinds.gan import GanKind
from cfjax.kinds.robust_gan import RobustGanKind

KINDS: dict[str, type] = {kind.name: kind for kind in (GanKind, RobustGanKind, ClassifierKind, SegmenterKind)}


def make_kind(config: ml_collections.ConfigDict, mesh: Mesh) -> RunKind:
    """The kind `config.model` names, built for `config` on `mesh`."""
    return KINDS[config.model](config, mesh)


__all__ = ["KINDS", "ClassifierKind", "GanKind", "Readout", "RobustGanKind", "RunKind", "SaliencyMethods",
           "SegmenterKind", "make_kind"]
