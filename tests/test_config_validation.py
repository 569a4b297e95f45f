"""Every shipped config variant is valid; bad fields are named."""

import json

import baselines
import cracks
import fruits
import ml_collections
import pytest

from cfjax.config import upgrade_config
from cfjax.config.validation import validate_config
from cfjax.errors import ConfigError


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
    with pytest.raises(ValueError, match="unknown config variant 'svm'; choose one of MODEL"):
        baselines.get_config("svm,tiny")


def test_a_baseline_argument_with_too_many_parts_is_refused():
    with pytest.raises(ValueError, match="unknown config variant 'sut'; .* as MODEL,TASK,VARIANT in this order"):
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
        ("saliency.reduce", "sum", "config.saliency.reduce='sum'"),
        ("saliency.views", "rotations", "config.saliency.views='rotations': must be one of ('identity', 'flips', "
         "'dihedral')"),
        ("compute_dtype", "float16", "config.compute_dtype='float16': must be one of ('float32', 'bfloat16')"),
        ("model", "svm", "config.model='svm': must be one of ('gan', 'robust_gan', 'classifier', 'segmenter')"),
        ("explain.fixed_fraction", 1.5, "config.explain.fixed_fraction=1.5: must be in [0, 1)"),
        ("explain.top_k_percent", -1.0, "config.explain.top_k_percent=-1.0"),
        ("explain.ig_steps", 0, "config.explain.ig_steps=0: must be an integer >= 1"),
        ("explain.tolerance", -1, "config.explain.tolerance=-1: must be an integer in [0, 33)"),
        ("explain.centerline_tolerance", 40, "config.explain.centerline_tolerance=40: must be an integer in [0, 33)"),
        ("explain.thin_reduce", "median", "config.explain.thin_reduce='median': must be '' (off) or one of"),
        ("adversarial_training.epsilon", 0.1, "PGD training applies to config.model in ('classifier', 'robust_gan')"),
        ("adversarial_training.epsilon", -0.1, "config.adversarial_training.epsilon=-0.1: must be >= 0"),
        ("adversarial_training.norm", "l1", "config.adversarial_training.norm='l1': must be one of ('linf', 'l2')"),
        ("adversarial_training.num_steps", 0, "config.adversarial_training.num_steps=0"),
        ("adversarial_training.warmup_steps", -1, "config.adversarial_training.warmup_steps=-1: must be an integer"),
        ("attack.linf_epsilons_255", (), "config.attack.linf_epsilons_255=(): must list at least one budget"),
        ("attack.l2_epsilons", (0.5, -1.0), "config.attack.l2_epsilons=(0.5, -1.0)"),
        ("attack.strong_restarts", 0, "config.attack.strong_restarts=0: must be an integer >= 1"),
        ("attack.max_examples", -1, "config.attack.max_examples=-1"),
        ("attack.ensemble_queries", 0, "config.attack.ensemble_queries=0: must be an integer >= 1"),
        ("attack.ensemble_epsilons_255", (4.0, 0.0), "config.attack.ensemble_epsilons_255=(4.0, 0.0): must list"),
        ("attack.strong", "apgd", "config.attack.strong='apgd': must be one of ('ensemble', 'pgd')"),
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


def test_a_missing_field_is_named(tiny_config):
    del tiny_config.data["view"]
    with pytest.raises(ConfigError, match=r"config.data.view is missing"):
        validate_config(tiny_config)


def test_an_unknown_field_is_refused(tiny_config):
    with tiny_config.unlocked():
        tiny_config.data.shuffle = True
    with pytest.raises(ConfigError, match=r"config.data.shuffle: unknown field"):
        validate_config(tiny_config)


def test_an_old_config_is_upgraded_even_when_locked(tiny_config):
    """A config saved before the saliency section, balance_classes and the analysis sections: the moved
    fields keep their values, the added ones get what such a run did."""
    old = tiny_config.to_dict()
    for section in ("saliency", "explain", "attack", "adversarial_training"):
        del old[section]
    del old["model"], old["data"]["balance_classes"], old["optimizer"]["generator"]["eps"]
    old["eval"].update(saliency_reduce="max", contrast_radius=3)
    old["explain"] = {"blur_radius": 1}
    config = ml_collections.ConfigDict(old)
    config.lock()
    assert upgrade_config(config) is config
    assert config.saliency.to_dict() == {"reduce": "max", "blur_radius": 1, "contrast_radius": 3,
                                         "views": "identity"}  # made before views were averaged
    assert "saliency_reduce" not in config.eval and "blur_radius" not in config.explain
    assert config.data.balance_classes is False and config.model == "gan"
    assert config.optimizer.generator.eps == 1e-8 and config.adversarial_training.epsilon == 0.0
    assert config.attack.iterations == 10 and config.explain.ig_steps == 16
    # Tolerant scores only add numbers; the thin-mask rows did not exist.
    assert (config.explain.tolerance, config.explain.centerline_tolerance) == (2, 4)
    assert config.explain.thin_nms is False and config.explain.thin_reduce == ""
    validate_config(config)


def test_upgrade_leaves_a_current_config_alone(tiny_config):
    before = tiny_config.to_dict()
    assert upgrade_config(tiny_config).to_dict() == before


def test_the_adversarial_baseline_follows_num_steps_and_epsilon():
    config = baselines.get_config("adversarial,fruits")
    assert config.adversarial_training.warmup_steps == config.num_steps // 3
    assert config.adversarial_training.step_size == 2.5 * 4.0 / 255 / 7  # the numbers of before, bit for bit
    config.num_steps = 900
    config.adversarial_training.epsilon = 8 / 255
    assert config.adversarial_training.warmup_steps == 300
    assert config.adversarial_training.step_size == pytest.approx(2.5 * 8 / 255 / 7)
    saved = config.to_dict()  # what a checkpoint stores: plain numbers
    assert saved["adversarial_training"]["warmup_steps"] == 300
    json.dumps(saved)
    config.adversarial_training.warmup_steps = 10  # the derived field itself may still be set
    assert config.adversarial_training.warmup_steps == 10 and config.num_steps == 900
    validate_config(config)


def test_variants_of_every_config_are_parsed_by_one_helper():
    import common

    slots = {"model": ("a", "b"), "task": ("x", "y"), "variant": ("default", "tiny")}
    assert common.parse_arg("b,tiny", slots) == {"model": "b", "task": "x", "variant": "tiny"}
    assert common.parse_arg("", slots) == {"model": "a", "task": "x", "variant": "default"}
    with pytest.raises(ValueError, match=r"unknown config variant 'x'; choose one of MODEL \('a', 'b'\), "
                                         r"TASK \('x', 'y'\), VARIANT \('default', 'tiny'\)"):
        common.parse_arg("tiny,x", slots)


# Fields that, before they were checked up front, trained for minutes and then failed at the first
# evaluation (or crashed in JAX), losing the steps: each refused before any work, named with its value.
INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seed", -1, "config.seed=-1: must be an integer in [0, 2147483648)"),
        ("seed", 2**32, "config.seed=4294967296: must be an integer in [0, 2147483648)"),
        ("seed", 10**30, "config.seed=1000000000000000000000000000000: must be an integer in"),
        ("seed", True, "config.seed=True: must be an integer"),
        ("data.seed", -5, "config.data.seed=-5: must be an integer in [0, 2147483648)"),
        ("eval.batch_size", 0, "config.eval.batch_size=0: must be an integer >= 1"),
        ("eval.num_thresholds", 2.5, "config.eval.num_thresholds=2.5: must be an integer >= 2"),
        ("eval.num_image_rows", -1, "config.eval.num_image_rows=-1: must be an integer >= 0"),
        ("saliency.blur_radius", -1, "config.saliency.blur_radius=-1: must be an integer >= 0"),
        ("saliency.contrast_radius", -2, "config.saliency.contrast_radius=-2: must be an integer >= 0"),
        ("generator.width", 0, "config.generator.width=0: must be an integer >= 1"),
        ("generator.width", 8.5, "config.generator.width=8.5: must be an integer >= 1"),
        ("generator.width", "8", "config.generator.width='8': must be an integer >= 1"),
        ("discriminator.widths", (8, 0), "config.discriminator.widths=(8, 0): must list at least one integer"),
        ("discriminator.widths", (8, "16"), "config.discriminator.widths=(8, '16'): must list at least one"),
        ("discriminator.widths", (8, 16.0), "config.discriminator.widths=(8, 16.0): must list at least one"),
        ("discriminator.widths", (8, True), "config.discriminator.widths=(8, True): must list"),
        ("discriminator.blocks_per_stage", 0, "config.discriminator.blocks_per_stage=0: must be an integer >= 1"),
        ("discriminator.dropout", 1.0, "config.discriminator.dropout=1.0: must be in [0, 1)"),
        ("discriminator.dropout", -0.1, "config.discriminator.dropout=-0.1: must be in [0, 1)"),
        ("generator.head_dropout", NAN, "config.generator.head_dropout=nan: must be in [0, 1)"),
        ("data.colour_jitter", NAN, "config.data.colour_jitter=nan: must be in [0, 1)"),
        ("ema_decay", NAN, "config.ema_decay=nan: must be in [0, 1)"),
        ("attack.linf_epsilons_255", (2.0, INF), "config.attack.linf_epsilons_255=(2.0, inf): must list at least"),
        ("attack.l2_epsilons", (NAN,), "config.attack.l2_epsilons=(nan,): must list at least one budget"),
        ("attack.paper_step_sizes_255", ("1",), "config.attack.paper_step_sizes_255=('1',): must list"),
        ("attack.check_epsilon_255", INF, "config.attack.check_epsilon_255=inf: must be a finite number > 0"),
        ("attack.adaptive_weight", NAN, "config.attack.adaptive_weight=nan: must be a finite number >= 0"),
        ("adversarial_training.epsilon", INF, "config.adversarial_training.epsilon=inf: must be >= 0 (0: off), a "
                                              "finite number"),
        ("adversarial_training.epsilon", NAN, "config.adversarial_training.epsilon=nan: must be >= 0"),
        ("adversarial_training.step_size", INF, "config.adversarial_training.step_size=inf: must be a finite"),
        ("optimizer.generator.learning_rate", INF, "config.optimizer.generator.learning_rate=inf: must be a finite "
                                                   "number > 0"),
        ("optimizer.discriminator.learning_rate", NAN, "config.optimizer.discriminator.learning_rate=nan"),
        ("optimizer.generator.eps", 0.0, "config.optimizer.generator.eps=0.0: must be a finite number > 0"),
        ("optimizer.generator.b2", 1.0, "config.optimizer.generator.b2=1.0: must be in [0, 1)"),
        ("optimizer.generator.clip_norm", -1.0, "config.optimizer.generator.clip_norm=-1.0: must be a finite number"),
        ("loss.prox_weight", INF, "config.loss.prox_weight=inf: must be >= 0 (a finite number)"),
        ("loss.fake_on_cycles", 1, "config.loss.fake_on_cycles=1: must be True or False"),
        ("adversarial_training.also_fake", 1, "config.adversarial_training.also_fake=1: must be True or False"),
        ("data.augment", "yes", "config.data.augment='yes': must be True or False"),
        ("explain.fixed_fraction", NAN, "config.explain.fixed_fraction=nan: must be in [0, 1)"),
        ("explain.top_k_percent", INF, "config.explain.top_k_percent=inf: must be in [0, 100)"),
    ],
)
def test_every_numeric_field_is_checked_for_type_range_and_finiteness(tiny_config, field, value, message):
    *path, last = field.split(".")
    node = tiny_config
    for part in path:
        node = node[part]
    with node.ignore_type():
        node[last] = value
    with pytest.raises(ConfigError) as error:
        validate_config(tiny_config)
    assert message in str(error.value)


def test_the_largest_seeds_are_accepted(tiny_config):
    from cfjax.config.validation import MAX_SEED

    tiny_config.seed = tiny_config.data.seed = MAX_SEED - 1
    validate_config(tiny_config)
