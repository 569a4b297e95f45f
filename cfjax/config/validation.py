"""Up-front checks of a complete config: every problem named by its field, before any compilation.

Every field is required and unknown fields are refused, so code after validation reads plain fields.
A saved config of an older run goes through `cfjax.config.upgrade_config` first."""

import math

import ml_collections

from cfjax.attacks.geometry import NORMS as ATTACK_NORMS
from cfjax.data.transforms import FIT_MODES
from cfjax.errors import ConfigError  # also imported from here by callers
from cfjax.masks.maps import REDUCTIONS
from cfjax.masks.maps import VIEWS as SALIENCY_VIEWS
from cfjax.models.generator import OUTPUT_MODES, STEMS
from cfjax.models.layers import COMPUTE_DTYPES, NORMS
from cfjax.optim import SCHEDULES

# Builders of prepared datasets (cfjax.data.builders); listed here so validation needs no TFDS import.
DATASET_BUILDERS = ("crack_segmentation", "fruit_defects", "class_folders")
VIEWS = ("patches", "full")
# What train_and_evaluate trains: the counterfactual GAN, its robust variant, or a baseline (cfjax.kinds).
MODELS = ("gan", "robust_gan", "classifier", "segmenter")
# The kinds that train on PGD examples (config.adversarial_training): "robust_gan" always, "classifier" optionally.
ADVERSARIALLY_TRAINED = ("classifier", "robust_gan")
NON_FINITE_POLICIES = ("stop", "skip_batch")
STRONG_ATTACKS = ("ensemble", "pgd")  # what attack.strong runs at the check budget

_OPTIMIZER_FIELDS = ("learning_rate", "b1", "b2", "eps", "clip_norm", "schedule", "warmup_steps")
# Every field of a config, by section ("" is the top level): all required, nothing else allowed.
FIELDS = {
    "": ("name", "seed", "num_classes", "model", "batch_size", "num_steps", "ema_decay", "log_every",
         "image_every", "eval_every", "checkpoint_every", "keep_checkpoints", "on_non_finite", "compute_dtype",
         "remat"),
    "data": ("name", "data_dir", "view", "seed", "image_size", "fit", "augment", "colour_jitter",
             "balance_classes", "num_train", "num_validation", "num_test", "num_workers", "prefetch"),
    "generator": ("width", "depth", "norm", "output", "stem", "head_dropout"),
    "discriminator": ("widths", "blocks_per_stage", "norm", "stem", "dropout"),
    "loss": ("adversarial_weight", "cls_weight", "cycle_weight", "prox_weight", "num_cycles", "fake_weight",
             "fake_on_cycles"),
    "optimizer": (),
    "optimizer.generator": _OPTIMIZER_FIELDS,
    "optimizer.discriminator": _OPTIMIZER_FIELDS,
    "eval": ("batch_size", "num_thresholds", "num_image_rows"),
    "saliency": ("reduce", "blur_radius", "contrast_radius", "views"),
    "explain": ("fixed_fraction", "top_k_percent", "ig_steps", "histogram_bins", "max_figures", "contact_rows",
                "tolerance", "centerline_tolerance", "thin_nms", "thin_reduce"),
    "adversarial_training": ("epsilon", "step_size", "num_steps", "norm", "warmup_steps", "also_fake",
                             "fake_weight_scale"),
    "attack": ("paper_step_sizes_255", "paper_iterations", "linf_epsilons_255", "l2_epsilons", "iterations",
               "restarts", "check_epsilon_255", "strong_iterations", "strong_restarts", "adaptive_weight",
               "max_examples", "models", "ensemble", "strong", "ensemble_iterations", "ensemble_targets",
               "ensemble_queries", "ensemble_epsilons_255"),
}


def _value(config, field: str):
    for part in field.split("."):
        config = config[part] if isinstance(config, ml_collections.ConfigDict) and part in config else None
    return config


def _require(condition: bool, field: str, message: str, config) -> None:
    if not condition:
        raise ConfigError(f"config.{field}={_value(config, field)!r}: {message}")


def _validate_fields(config: ml_collections.ConfigDict) -> None:
    """Every field of FIELDS present, and no other: a typo or a field of an older cfjax is named."""
    for section, fields in FIELDS.items():
        node = _value(config, section) if section else config
        prefix = f"config.{section}." if section else "config."
        if not isinstance(node, ml_collections.ConfigDict):
            raise ConfigError(f"config.{section} is missing")
        subsections = {name.rpartition(".")[2] for name in FIELDS if name and name.rpartition(".")[0] == section}
        for field in fields:
            if field not in node:
                raise ConfigError(f"{prefix}{field} is missing")
        for field in node.keys():
            if field not in fields and field not in subsections:
                raise ConfigError(f"{prefix}{field}: unknown field (a saved config of an older cfjax goes "
                                  "through cfjax.config.upgrade_config first)")


def _downsamplings(stem: str, count: int) -> int:
    return count + (1 if stem == "unshuffle" else 0)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite real number: an int or a float, not a bool, not NaN or infinite."""
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


# Seeds: config.seed + config.data.seed seeds the input pipeline, so each stays below 2^31 (the sum fits 32 bits).
MAX_SEED = 2**31


def _integer(config, field: str, low: int, high: int | None = None) -> None:
    """`field` an integer (not a bool) in [low, high)."""
    value = _value(config, field)
    ok = _is_int(value) and value >= low and (high is None or value < high)
    span = f">= {low}" if high is None else f"in [{low}, {high})"
    _require(ok, field, f"must be an integer {span}", config)


def _number(config, field: str, low: float, high: float | None = None, *, low_open: bool = False,
            message: str | None = None) -> None:
    """`field` a finite number (not a bool) >= low (> low with `low_open`) and < high."""
    value = _value(config, field)
    ok = _is_number(value) and (value > low if low_open else value >= low) and (high is None or value < high)
    if message is None:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        message = (f"must be a finite number {bound}" if high is None else
                   f"must be in {'(' if low_open else '['}{low:g}, {high:g})")
    _require(ok, field, message, config)


def _integers(config, field: str, low: int) -> None:
    """`field` a non-empty tuple of integers >= low."""
    values = _value(config, field)
    ok = isinstance(values, (tuple, list)) and len(values) >= 1 and all(_is_int(v) and v >= low for v in values)
    _require(ok, field, f"must list at least one integer, each >= {low}", config)


def _bool(config, field: str) -> None:
    _require(isinstance(_value(config, field), bool), field, "must be True or False", config)


def _validate_data(config: ml_collections.ConfigDict) -> None:
    data = config.data
    name = data.name
    pooled = name.split("+") if isinstance(name, str) else [name]  # several datasets joined by "+": a pool
    known = name == "synthetic" or all(isinstance(n, str) and n.split("/")[0] in DATASET_BUILDERS for n in pooled)
    _require(known, "data.name", f"must be 'synthetic' or a prepared dataset NAME/CONFIG with NAME in "
             f"{DATASET_BUILDERS} (or several of those joined by '+', a pool)", config)
    _require(len(set(pooled)) == len(pooled), "data.name", "names a dataset twice in one pool", config)
    if name == "synthetic":
        _require(config.num_classes in (2, 3, 4), "num_classes",
                 "the synthetic dataset has 2 (crack / no crack), 3 or 4 classes (crack types)", config)
    _require(data.view in VIEWS, "data.view", f"must be one of {VIEWS}", config)
    _require(data.fit in FIT_MODES, "data.fit", f"must be one of {FIT_MODES}", config)
    _require(not (name.startswith("crack_segmentation") and data.view == "full" and data.fit == "crop"),
             "data.fit", "cannot be 'crop' with data.view='full': a crop of a crack photo keeps the photo's label "
             "but may miss its crack; use the patch view, or fit='resize'", config)
    _number(config, "data.colour_jitter", 0.0, 1.0)
    _bool(config, "data.balance_classes")
    _bool(config, "data.augment")
    _integer(config, "data.seed", 0, MAX_SEED)
    _require(isinstance(data.data_dir, str), "data.data_dir", "must be a folder name (a string)", config)
    _integer(config, "data.num_workers", 0)
    _integer(config, "data.prefetch", 1)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` for the first field that cannot work."""
    _validate_fields(config)
    _require(_is_int(config.num_classes) and config.num_classes >= 2, "num_classes", "must be an integer >= 2", config)
    _require(_is_int(config.batch_size) and config.batch_size > 0, "batch_size", "must be a positive integer", config)
    _require(_is_int(config.num_steps) and config.num_steps >= 0, "num_steps", "must be an integer >= 0", config)
    _integer(config, "seed", 0, MAX_SEED)
    _number(config, "ema_decay", 0.0, 1.0)
    for field in ("log_every", "image_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        _require(_is_int(config[field]) and config[field] > 0, field, "must be a positive integer", config)
    _require(config.on_non_finite in NON_FINITE_POLICIES, "on_non_finite",
             f"must be one of {NON_FINITE_POLICIES}", config)
    _require(config.compute_dtype in COMPUTE_DTYPES, "compute_dtype",
             f"must be one of {tuple(COMPUTE_DTYPES)}", config)
    _require(isinstance(config.remat, bool), "remat", "must be True or False", config)

    gen, disc = config.generator, config.discriminator
    _require(gen.norm in NORMS, "generator.norm", f"must be one of {NORMS}", config)
    _require(disc.norm in NORMS, "discriminator.norm", f"must be one of {NORMS}", config)
    _require(gen.output in OUTPUT_MODES, "generator.output", f"must be one of {OUTPUT_MODES}", config)
    _require(gen.stem in STEMS, "generator.stem", f"must be one of {STEMS}", config)
    _require(disc.stem in STEMS, "discriminator.stem", f"must be one of {STEMS}", config)
    _integer(config, "generator.depth", 1)
    _integer(config, "generator.width", 1)
    _number(config, "generator.head_dropout", 0.0, 1.0)
    _require(isinstance(disc.widths, (tuple, list)) and len(disc.widths) >= 1, "discriminator.widths",
             "must list at least one stage width", config)
    _integers(config, "discriminator.widths", 1)
    _integer(config, "discriminator.blocks_per_stage", 1)
    _number(config, "discriminator.dropout", 0.0, 1.0)

    _validate_data(config)
    model = config.model
    _require(model in MODELS, "model", f"must be one of {MODELS}", config)
    _require(model != "segmenter" or not config.data.name.startswith("fruit_defects"), "model",
             "the segmentation baseline trains on masks, and fruit_defects has none", config)
    size = config.data.image_size
    g_factor = 2 ** _downsamplings(gen.stem, gen.depth)
    d_factor = 2 ** _downsamplings(disc.stem, len(disc.widths) - 1)
    _require(_is_int(size) and size > 0 and size % g_factor == 0, "data.image_size",
             f"must be divisible by {g_factor} (2^depth of the generator, times 2 for the unshuffle stem)", config)
    _require(size % d_factor == 0, "data.image_size",
             f"must be divisible by {d_factor} (the discriminator's downsampling)", config)
    if config.data.name == "synthetic":
        for split in ("num_train", "num_validation", "num_test"):
            _require(_is_int(config.data[split]) and config.data[split] > 0, f"data.{split}",
                     "must be a positive integer", config)
        _require(config.data.num_train >= config.batch_size, "data.num_train", "must be at least config.batch_size",
                 config)

    loss = config.loss
    for field in ("adversarial_weight", "cls_weight", "cycle_weight", "prox_weight", "fake_weight"):
        _number(config, f"loss.{field}", 0.0, message="must be >= 0 (a finite number)")
    _bool(config, "loss.fake_on_cycles")
    _require(_is_int(loss.num_cycles) and loss.num_cycles >= 0, "loss.num_cycles", "must be an integer >= 0", config)

    for name in ("generator", "discriminator"):
        opt = config.optimizer[name]
        _number(config, f"optimizer.{name}.learning_rate", 0.0, low_open=True)
        _require(opt.schedule in SCHEDULES, f"optimizer.{name}.schedule", f"must be one of {SCHEDULES}", config)
        for beta in ("b1", "b2"):
            _number(config, f"optimizer.{name}.{beta}", 0.0, 1.0)
        _number(config, f"optimizer.{name}.eps", 0.0, low_open=True)
        _number(config, f"optimizer.{name}.clip_norm", 0.0, message="must be a finite number >= 0 (0: off)")
        _require(_is_int(opt.warmup_steps) and opt.warmup_steps >= 0, f"optimizer.{name}.warmup_steps",
                 "must be an integer >= 0", config)

    saliency = config.saliency
    _require(saliency.reduce in REDUCTIONS, "saliency.reduce", f"must be one of {REDUCTIONS}", config)
    _require(saliency.views in SALIENCY_VIEWS, "saliency.views", f"must be one of {tuple(SALIENCY_VIEWS)}", config)
    for field in ("blur_radius", "contrast_radius"):
        _require(_is_int(saliency[field]) and saliency[field] >= 0, f"saliency.{field}", "must be an integer >= 0",
                 config)
    _integer(config, "eval.batch_size", 1)
    _integer(config, "eval.num_thresholds", 2)
    _integer(config, "eval.num_image_rows", 0)
    _validate_explain(config)
    _validate_adversarial_training(config)
    _validate_attack(config)


def _validate_adversarial_training(config: ml_collections.ConfigDict) -> None:
    adversarial = config.adversarial_training
    _number(config, "adversarial_training.epsilon", 0.0, message="must be >= 0 (0: off), a finite number")
    _require(adversarial.epsilon == 0 or config.model in ADVERSARIALLY_TRAINED, "adversarial_training.epsilon",
             f"PGD training applies to config.model in {ADVERSARIALLY_TRAINED} only", config)
    _require(adversarial.epsilon > 0 or config.model != "robust_gan", "adversarial_training.epsilon",
             "config.model='robust_gan' trains D on PGD examples: must be > 0", config)
    _bool(config, "adversarial_training.also_fake")
    _require(not adversarial.also_fake or config.model == "robust_gan", "adversarial_training.also_fake",
             "labels PGD examples with D's fake class: config.model='robust_gan' only", config)
    _number(config, "adversarial_training.fake_weight_scale", 0.0)
    _require(adversarial.fake_weight_scale == 1.0 or adversarial.also_fake, "adversarial_training.fake_weight_scale",
             "weighs the PGD examples' fake term: needs adversarial_training.also_fake=True", config)
    _number(config, "adversarial_training.step_size", 0.0, low_open=True)
    _require(_is_int(adversarial.num_steps) and adversarial.num_steps >= 1, "adversarial_training.num_steps",
             "must be an integer >= 1", config)
    _require(adversarial.norm in ATTACK_NORMS, "adversarial_training.norm", f"must be one of {ATTACK_NORMS}", config)
    warmup = adversarial.warmup_steps
    _require(_is_int(warmup) and 0 <= warmup <= config.num_steps, "adversarial_training.warmup_steps",
             "must be an integer in [0, num_steps]", config)


def _validate_attack(config: ml_collections.ConfigDict) -> None:
    attack = config.attack
    for field in ("paper_step_sizes_255", "linf_epsilons_255", "l2_epsilons"):
        values = attack[field]
        ok = isinstance(values, (tuple, list)) and len(values) >= 1 and all(_is_number(v) and v > 0 for v in values)
        _require(ok, f"attack.{field}", "must list at least one budget, each > 0 (finite numbers)", config)
    chosen = attack.ensemble_epsilons_255
    _require(isinstance(chosen, (tuple, list)) and all(_is_number(v) and v > 0 for v in chosen),
             "attack.ensemble_epsilons_255", "must list budgets, each > 0 (empty: those of linf_epsilons_255)",
             config)
    for field in ("paper_iterations", "iterations", "restarts", "strong_iterations", "strong_restarts",
                  "ensemble_iterations", "ensemble_targets", "ensemble_queries"):
        _require(_is_int(attack[field]) and attack[field] >= 1, f"attack.{field}", "must be an integer >= 1", config)
    _require(isinstance(attack.ensemble, bool), "attack.ensemble", "must be True or False", config)
    _require(attack.strong in STRONG_ATTACKS, "attack.strong", f"must be one of {STRONG_ATTACKS}", config)
    _number(config, "attack.check_epsilon_255", 0.0, low_open=True)
    _number(config, "attack.adaptive_weight", 0.0)
    _require(_is_int(attack.max_examples) and attack.max_examples >= 0, "attack.max_examples",
             "must be an integer >= 0 (0: the whole test split)", config)
    _require(all(isinstance(name, str) for name in attack.models), "attack.models",
             "must list model names such as 'D', 'G_head', 'classifier' (empty: all)", config)


def _validate_explain(config: ml_collections.ConfigDict) -> None:
    explain = config.explain
    _number(config, "explain.fixed_fraction", 0.0, 1.0, message="must be in [0, 1)")
    _number(config, "explain.top_k_percent", 0.0, 100.0, message="must be in [0, 100) (0: from the validation split)")
    for field in ("max_figures",):
        _require(_is_int(explain[field]) and explain[field] >= 0, f"explain.{field}", "must be an integer >= 0", config)
    for field in ("ig_steps", "histogram_bins", "contact_rows"):
        _require(_is_int(explain[field]) and explain[field] >= 1, f"explain.{field}", "must be an integer >= 1", config)
    for field in ("tolerance", "centerline_tolerance"):
        _integer(config, f"explain.{field}", 0, 33)
    _require(isinstance(explain.thin_nms, bool), "explain.thin_nms", "must be True or False", config)
    _require(explain.thin_reduce == "" or explain.thin_reduce in REDUCTIONS, "explain.thin_reduce",
             f"must be '' (off) or one of {REDUCTIONS}", config)
