"""Every shipped config variant is valid; bad fields are named."""

import baselines
import cracks
import fruits
import pytest

from cfjax.config_validation import ConfigError, validate_config


def _without_name(config) -> dict:
    fields = config.to_dict()
    del fields["name"]
    return fields


@pytest.mark.parametrize("variant", cracks.VARIANTS)
def test_shipped_variants_validate(variant):
    config = cracks.get_config(variant)
    validate_config(config)
    assert config.name == ("cracks" if variant == "default" else f"cracks_{variant}")
    if variant != "default":  # each variant changes more than the name
        assert _without_name(config) != _without_name(cracks.get_config("default"))


@pytest.mark.parametrize("arg, model, mirrored", [
    ("classifier", "classifier", cracks.get_config("default")),
    ("unet", "segmenter", cracks.get_config("default")),
    ("classifier,tiny", "classifier", cracks.get_config("tiny")),
    ("unet,sut", "segmenter", cracks.get_config("sut")),
    ("adversarial,fruits", "classifier", fruits.get_config("default")),
    ("classifier,fruits,tiny", "classifier", fruits.get_config("tiny")),
])
def test_baseline_configs_validate_and_mirror_their_gan_config(arg, model, mirrored):
    """Each baseline is the GAN config of its task and variant with `model` switched (and, for
    `adversarial` only, PGD training on): the same data, backbone and budget."""
    config = baselines.get_config(arg)
    validate_config(config)
    assert config.model == model and config.name == f"{mirrored.name}_{arg.split(',')[0]}"
    assert config.data.to_dict() == mirrored.data.to_dict() and config.num_steps == mirrored.num_steps
    assert config.discriminator.to_dict() == mirrored.discriminator.to_dict()
    adversarial = config.adversarial_training
    if arg.startswith("adversarial"):
        assert adversarial.epsilon == pytest.approx(4 / 255) and adversarial.warmup_steps == config.num_steps // 3
    else:
        assert adversarial.epsilon == 0.0


def test_unknown_baseline_is_named():
    with pytest.raises(ValueError, match="unknown baseline 'svm'"):
        baselines.get_config("svm,tiny")


def test_a_baseline_argument_with_too_many_parts_is_refused():
    with pytest.raises(ValueError, match="expected MODEL\\[,TASK\\]\\[,VARIANT\\]"):
        baselines.get_config("classifier,tiny,sut")


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown config variant 'huge'"):
        cracks.get_config("huge")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_classes", 1, "config.num_classes=1: must be an integer >= 2"),
        ("num_classes", 5, "config.num_classes=5: the synthetic dataset has 2"),
        ("ema_decay", 1.0, "config.ema_decay=1.0: must be in [0, 1)"),
        ("on_non_finite", "retry", "config.on_non_finite='retry': must be one of"),
        ("loss.cycle_weight", -1.0, "config.loss.cycle_weight=-1.0: must be >= 0"),
        ("loss.num_cycles", -1, "config.loss.num_cycles=-1"),
        ("optimizer.generator.schedule", "step", "config.optimizer.generator.schedule='step'"),
        ("data.num_train", 4, "config.data.num_train=4: must be at least config.batch_size"),
        ("eval.saliency_reduce", "sum", "config.eval.saliency_reduce='sum'"),
        ("compute_dtype", "float16", "config.compute_dtype='float16': must be one of ('float32', 'bfloat16')"),
        ("model", "svm", "config.model='svm': must be one of ('gan', 'classifier', 'segmenter')"),
        ("explain.fixed_fraction", 1.5, "config.explain.fixed_fraction=1.5: must be in [0, 1)"),
        ("explain.top_k_percent", -1.0, "config.explain.top_k_percent=-1.0"),
        ("explain.ig_steps", 0, "config.explain.ig_steps=0: must be an integer >= 1"),
        ("adversarial_training.epsilon", 0.1, "PGD training applies to the plain classifier only"),
        ("adversarial_training.epsilon", -0.1, "config.adversarial_training.epsilon=-0.1: must be >= 0"),
        ("adversarial_training.norm", "l1", "config.adversarial_training.norm='l1': must be one of ('linf', 'l2')"),
        ("adversarial_training.num_steps", 0, "config.adversarial_training.num_steps=0"),
        ("adversarial_training.warmup_steps", -1, "config.adversarial_training.warmup_steps=-1: must be an integer"),
        ("attack.linf_epsilons_255", (), "config.attack.linf_epsilons_255=(): must list at least one budget"),
        ("attack.l2_epsilons", (0.5, -1.0), "config.attack.l2_epsilons=(0.5, -1.0)"),
        ("attack.strong_restarts", 0, "config.attack.strong_restarts=0: must be an integer >= 1"),
        ("attack.max_examples", -1, "config.attack.max_examples=-1"),
    ],
)
def test_bad_fields_are_named(tiny_config, field, value, message):
    *path, last = field.split(".")
    node = tiny_config
    for part in path:
        node = node[part]
    node[last] = value
    with pytest.raises(ConfigError) as error:
        validate_config(tiny_config)
    assert message in str(error.value)


def test_the_segmentation_baseline_needs_masks(tiny_config):
    tiny_config.model = "segmenter"
    tiny_config.data.name = "fruit_defects/apples"
    with pytest.raises(ConfigError, match="fruit_defects has none"):
        validate_config(tiny_config)


def test_older_config_files_get_the_analysis_sections_even_when_locked(tiny_config):
    from cfjax.config_defaults import add_missing_sections

    for field in ("explain", "attack", "adversarial_training"):
        del tiny_config[field]
    tiny_config.lock()
    add_missing_sections(tiny_config)
    assert tiny_config.adversarial_training.epsilon == 0.0 and tiny_config.attack.iterations == 10
    validate_config(tiny_config)
