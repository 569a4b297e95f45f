"""Models as pure functions: Flax Linen modules used through `init` / `apply`."""

import ml_collections

from cfjax.models.classifier import ResNetClassifier, class_logits, p_fake, predict_class
from cfjax.models.generator import Generator


def make_generator(config: ml_collections.ConfigDict) -> Generator:
    """G for `config.num_classes` classes, shaped by `config.generator`."""
    return Generator(num_classes=config.num_classes, **config.generator.to_dict(), **_execution(config))


def _execution(config: ml_collections.ConfigDict) -> dict:
    """How the networks run (not what they compute up to rounding): compute dtype and rematerialisation."""
    return {"compute_dtype": config.compute_dtype, "remat": config.remat}


def make_discriminator(config: ml_collections.ConfigDict) -> ResNetClassifier:
    """D: the classifier with one extra output, "fake"."""
    return _classifier(config, config.num_classes + 1)


def make_plain_classifier(config: ml_collections.ConfigDict) -> ResNetClassifier:
    """The baseline: D's backbone with K outputs, trained without a generator."""
    return _classifier(config, config.num_classes)


def make_segmenter(config: ml_collections.ConfigDict) -> Generator:
    """The supervised ceiling: G's U-Net with one output logit per pixel (crack / background)."""
    fields = config.generator.to_dict()
    fields.update(output="logits", out_channels=1)
    return Generator(num_classes=1, **fields, **_execution(config))


def _classifier(config: ml_collections.ConfigDict, num_outputs: int) -> ResNetClassifier:
    fields = config.discriminator.to_dict()
    fields["widths"] = tuple(fields["widths"])
    return ResNetClassifier(num_outputs=num_outputs, **fields, **_execution(config))


__all__ = [
    "Generator", "ResNetClassifier", "class_logits", "p_fake", "predict_class",
    "make_generator", "make_discriminator", "make_plain_classifier", "make_segmenter",
]
