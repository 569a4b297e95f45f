"""What every kind of run offers the rest of cfjax: the `RunKind` protocol, and the two small records
kinds hand out (`Readout`, a decision to attack; `SaliencyMethods`, the maps a run explains with).

The training loop, `cfjax.restore`, `--mode=explain` and `--mode=attack` only talk to this protocol,
so a new kind of run is one new class in `cfjax/kinds/` and one entry in `KINDS`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from cfjax.metric_writer import MetricWriter


@dataclasses.dataclass(frozen=True)
class Readout:
    """One decision to attack: `apply_fn(params, images) -> logits` in inference mode, K classes, plus a
    "fake" logit when `has_detector` (D, whose p_fake is then the uncertainty score)."""

    name: str
    apply_fn: Callable[[Any, jnp.ndarray], jnp.ndarray]
    params: Any
    num_classes: int
    has_detector: bool = False


@dataclasses.dataclass(frozen=True)
class SaliencyMethods:
    """`maps(params, images, labels)` returns ({name: (B, H, W) map in [0, 1]}, extras), with the names in
    `names`' order; the first is the run's own. Labels of -1 mean "unknown" (a folder of photos).
    `extras` holds "counterfactual_image" when `draws_counterfactual`. `toward_each_class(params, images,
    labels)`, where the run has one, gives the counterfactual map toward every class (K > 2 figures).
    `saliency_fields` names the `config.saliency` fields the maps depend on: an explanation or prediction
    records only those, so a setting that changes none of a run's maps never makes it stale."""

    names: tuple
    maps: Callable
    draws_counterfactual: bool
    toward_each_class: Callable | None = None
    saliency_fields: tuple = ()

    def saliency_settings(self, config: ml_collections.ConfigDict) -> dict:
        """The `config.saliency` values these maps are made with (what explain.json and predict record)."""
        return {field: config.saliency[field] for field in self.saliency_fields}


class RunKind(Protocol):
    """A kind of run (`config.model`): its networks and jitted train step, its evaluation and figures,
    and what a restored run of it offers."""

    name: ClassVar[str]  # the value of config.model
    needs_masks: ClassVar[bool]  # training batches carry the masks
    progress_fields: ClassVar[tuple]  # (short label, metric) pairs for the progress bar
    inference_fields: ClassVar[tuple]  # fields of the training state inference needs
    offers: ClassVar[tuple]  # the `cfjax.restore` methods it supports
    mask_threshold: ClassVar[float | None]  # a fixed mask threshold, or None: tuned / Otsu

    config: ml_collections.ConfigDict
    mesh: Mesh

    def init_state(self, key: jax.Array) -> Any:
        """A fresh training state, replicated over the mesh (jitted)."""

    def train_step(self, state: Any, batch: dict) -> tuple[Any, dict]:
        """One update (jitted, state donated) and its metrics with a `finite` flag."""

    def attach(self, data: dict, workdir: str, writer: MetricWriter) -> None:
        """Prepare the evaluators of the validation and test arrays and the figure writer."""

    def evaluate(self, state: Any, split: str) -> dict:
        """Per-image results of one split (see `cfjax.evaluate.summarize`)."""

    def write_images(self, step: int, state: Any) -> None:
        """Training figures at `step` (none for the baselines)."""

    def inference_params(self, fields: dict) -> Any:
        """The parameters inference uses, from the restored `inference_fields`."""

    def inference_functions(self) -> dict[str, Callable]:
        """{method in `offers`: fn(params, images, targets)}, jittable, in inference mode."""

    def saliency_methods(self) -> SaliencyMethods:
        """The maps `--mode=explain` scores for this kind."""

    def readouts(self, params: Any) -> list[Readout]:
        """The decisions `--mode=attack` attacks (ConfigError when the kind has none)."""
