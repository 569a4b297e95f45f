"""The kinds of run `train_and_evaluate` trains, chosen by `config.model`: the counterfactual GAN and its
two baselines. Each is one class (see `base.RunKind`); add a kind here and to `KINDS`."""

import ml_collections
from jax.sharding import Mesh

from cfjax.kinds.base import Readout, RunKind, SaliencyMethods
from cfjax.kinds.baselines import ClassifierKind, SegmenterKind
from cfjax.kinds.gan import GanKind

KINDS: dict[str, type] = {kind.name: kind for kind in (GanKind, ClassifierKind, SegmenterKind)}


def make_kind(config: ml_collections.ConfigDict, mesh: Mesh) -> RunKind:
    """The kind `config.model` names, built for `config` on `mesh`."""
    return KINDS[config.model](config, mesh)


__all__ = ["KINDS", "ClassifierKind", "GanKind", "Readout", "RunKind", "SaliencyMethods", "SegmenterKind",
           "make_kind"]
