"""Default settings shared by the configs in this folder: a GAN sized for a 2-core CPU, and its
`:tiny` and `:accelerator` variants. Each config file starts from these and says what differs.

Config files are loaded by path (`--config=configs/cracks.py`), so they import this module after putting
their own folder on sys.path; the library never imports it (a saved run carries its whole config).
"""

from collections.abc import Mapping, Sequence

import ml_collections


def data_config(name: str = "synthetic") -> ml_collections.ConfigDict:
    """What to train on and how to read it."""
    data = ml_collections.ConfigDict()
    # "synthetic" (embedded, generated on the fly) or a dataset prepared by `python -m cfjax.data.prepare`:
    # crack_segmentation/{sut,crack500,uav75,folder}, fruit_defects/{apples,all,fruit_state}, class_folders.
    data.name = name
    data.data_dir = ""  # where prepared datasets live; "" = TFDS's default (~/tensorflow_datasets)
    data.view = "patches"  # crack_segmentation: train on the patch view, or on "full" images
    data.seed = 0
    data.image_size = 64
    data.fit = "resize"  # how images of another size reach image_size: "resize" or "crop" (random in training)
    data.augment = True  # random flips and 90-degree rotations
    data.colour_jitter = 0.0  # brightness / contrast / saturation, each up to +-this
    data.balance_classes = True  # repeat smaller classes so each epoch has every class equally often
    # Sizes of the embedded dataset's splits (prepared datasets always use their whole splits).
    data.num_train = 8192
    data.num_validation = 256
    data.num_test = 512
    data.num_workers = 2  # grain threads preparing batches ahead of the step
    data.prefetch = 4  # batches prepared ahead
    return data


def parse_arg(arg: str | None, slots: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The argument after a config path's colon, "A[,B]...", as {slot: choice}.

    `slots` names the parts in order with their choices, the first being the default: each part fills
    the next slot that accepts it, skipped slots keep their default. Anything else is one ValueError
    listing every slot's choices (e.g. `baselines.py:unet,sut` is {model: unet, task: cracks, variant: sut}).
    """
    parsed = {name: choices[0] for name, choices in slots.items()}
    names = list(slots)
    position = 0
    for part in (arg or "").split(",") if arg else []:
        match = next((i for i in range(position, len(names)) if part in slots[names[i]]), None)
        if match is None:
            form = ",".join(name.upper() for name in names)
            choices = ", ".join(f"{name.upper()} {tuple(choices)}" for name, choices in slots.items())
            raise ValueError(f"unknown config variant {part!r}; choose one of {choices}, as {form} in this "
                             f"order (each optional); got {arg!r}")
        parsed[names[match]] = part
        position = match + 1
    return parsed


def base_config(name: str) -> ml_collections.ConfigDict:
    """Every field, at the values that reach IoU 0.5 on the embedded dataset in ~15 CPU minutes."""
    config = ml_collections.ConfigDict()
    config.name = name
    config.seed = 0
    config.num_classes = 2
    # or "robust_gan" (D also trained on PGD examples: `robust_gan` below), or a baseline: "classifier"
    # (D's backbone, labels only), "segmenter" (G's U-Net, masks)
    config.model = "gan"

    config.data = data_config()

    config.batch_size = 16
    config.num_steps = 4500  # docs/training.md, "How the CPU config was chosen"
    config.ema_decay = 0.999

    config.generator = ml_collections.ConfigDict()
    config.generator.width = 16
    config.generator.depth = 2
    config.generator.norm = "group"
    config.generator.output = "residual"
    config.generator.stem = "unshuffle"
    config.generator.head_dropout = 0.1

    config.discriminator = ml_collections.ConfigDict()
    config.discriminator.widths = (16, 32, 64)
    config.discriminator.blocks_per_stage = 1
    config.discriminator.norm = "group"
    config.discriminator.stem = "unshuffle"
    config.discriminator.dropout = 0.0

    config.loss = ml_collections.ConfigDict()
    config.loss.adversarial_weight = 1.0
    config.loss.cls_weight = 1.0
    config.loss.cycle_weight = 10.0
    # |x_hat - x| is a per-pixel mean: removing a crack costs ~0.01, so a weight of 10 keeps edits
    # sparse without outweighing the adversarial term (~1).
    config.loss.prox_weight = 10.0
    # Cycles (c >= 1, the paper's default) double G's cost per step; on a 2-core CPU the 15-minute
    # budget is better spent on more steps, with the proximity term keeping x_hat near x.
    config.loss.num_cycles = 0
    config.loss.fake_weight = 1.0
    config.loss.fake_on_cycles = False

    config.optimizer = ml_collections.ConfigDict()
    # D must learn the classes early (docs/design.md, section 6): it gets the larger step.
    for network, learning_rate in (("generator", 5e-4), ("discriminator", 1e-3)):
        opt = ml_collections.ConfigDict()
        opt.learning_rate = learning_rate
        opt.b1 = 0.5
        opt.b2 = 0.999
        opt.eps = 1e-8
        opt.clip_norm = 0.0
        opt.schedule = "constant"
        opt.warmup_steps = 0
        config.optimizer[network] = opt

    config.log_every = 50
    config.image_every = 600
    config.eval_every = 600
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    # A step whose loss, gradients or parameters are NaN/Inf is never applied. "stop" ends the run naming
    # the term and the last good checkpoint; "skip_batch" keeps the last good state and goes on with the
    # next batch (what rolling back to the last checkpoint and replaying would reach: replay is exact).
    config.on_non_finite = "stop"
    # How the networks run, not what they learn: both may change when a run resumes.
    # "bfloat16" computes in bf16 on a GPU or TPU with float32 parameters and optimizer (slow on a CPU);
    # `remat` recomputes residual blocks in the backward pass, trading compute for memory at large sizes.
    config.compute_dtype = "float32"
    config.remat = False

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64
    config.eval.num_thresholds = 101
    config.eval.num_image_rows = 6

    config.saliency = saliency_config()
    config.explain = explain_config()
    config.adversarial_training = adversarial_training_config()
    config.attack = attack_config()
    return config


def adversarial_training_config() -> ml_collections.ConfigDict:
    """Madry-style PGD training of the plain classifier (`model="classifier"`, off while epsilon is 0) and
    of the robust GAN's D (`model="robust_gan"`, epsilon > 0).

    Budgets are on the [0, 1] image scale. The training attack starts at a uniform random point.
    `warmup_steps` ramps epsilon and the step size linearly from 0 (0: full budget from the first step).
    """
    adversarial = ml_collections.ConfigDict()
    adversarial.epsilon = 0.0
    adversarial.step_size = 2.0 / 255
    adversarial.num_steps = 7
    adversarial.norm = "linf"
    adversarial.warmup_steps = 0
    # The robust GAN (`model="robust_gan"`) only: D also learns its PGD examples as "fake" (a detector),
    # their fake term weighted fake_weight_scale x loss.fake_weight (generated images: loss.fake_weight).
    adversarial.also_fake = False
    adversarial.fake_weight_scale = 1.0
    return adversarial


def pgd_training(config: ml_collections.ConfigDict) -> None:
    """Turn on Madry et al.'s L-inf PGD-7 from a random start at 4/255 (the budget the robustness aim is
    read at), step 2.5 epsilon / 7, epsilon ramped up over the first third of the steps: at the full
    8/255 from step 0 the fruit classifier stayed at chance for 800 steps (loss 0.69). The PGD-trained
    classifier and the robust GAN's D share it, so both ramp alike. Step size and ramp follow their sources
    (field references): --config.num_steps=900 ramps over 300 steps, a larger epsilon scales the step."""
    adversarial = config.adversarial_training
    adversarial.epsilon = 4.0 / 255
    adversarial.step_size = adversarial.get_ref("epsilon") * 2.5 / 7
    adversarial.warmup_steps = config.get_ref("num_steps") // 3


def robust_gan(config: ml_collections.ConfigDict, detector: bool = False) -> None:
    """Make a GAN config the robust GAN's: D trains on PGD examples of the real images (`pgd_training`).
    `detector`: D also learns those examples as "fake", so that p_fake flags attacks (`:detector`), their fake
    term weighed 3x a generated image's. Chosen on the fruit validation split (seed 0, PGD-10 at 4/255,
    `--mode=attack --split=validation`): p_fake AUROC clean vs attacked 0.945 at scale 3 against 0.783 at 1,
    robust accuracy 0.775 against 0.790 (docs/robustness.md)."""
    config.model = "robust_gan"
    config.name = f"{config.name}_{'detector' if detector else 'robust'}"
    pgd_training(config)
    config.adversarial_training.also_fake = detector
    config.adversarial_training.fake_weight_scale = 3.0 if detector else 1.0


def attack_config() -> ml_collections.ConfigDict:
    """What `--mode=attack` measures on a trained run (never changes training). Budgets in pixel units
    of 1/255 for L-inf, on the [0, 1] scale for L2."""
    attack = ml_collections.ConfigDict()
    # The paper's protocol: 10 PGD iterations at step alpha, budget epsilon = 10 alpha.
    attack.paper_step_sizes_255 = (0.5, 1.0, 2.0, 4.0, 8.0)
    attack.paper_iterations = 10
    # Fixed-budget sweeps: 10 iterations with step 2.5 epsilon / iterations (Madry et al.), one random start.
    attack.linf_epsilons_255 = (1.0, 2.0, 4.0, 8.0, 16.0)
    attack.l2_epsilons = (0.1, 0.25, 0.5, 1.0)
    attack.iterations = 10
    attack.restarts = 1
    # Gradient-masking checks at this L-inf budget: margin loss, a longer attack with restarts, transfer.
    attack.check_epsilon_255 = 4.0
    # 2x the iterations and 3 random restarts (CPU-sized; the accelerator variant runs 100 x 10).
    attack.strong_iterations = 20
    attack.strong_restarts = 3
    # The AutoAttack-style ensemble (APGD-CE, APGD-DLR / APGD-T where the class count allows, FAB-T, Square)
    # at every L-inf budget, beside PGD; "strong" is the check it answers at check_epsilon_255 ("pgd": the
    # longer PGD with restarts above). Defaults: AutoAttack's standard version (100 iterations, up to 9
    # target classes, 5000 Square queries).
    attack.ensemble = True
    attack.strong = "ensemble"
    attack.ensemble_iterations = 100
    attack.ensemble_targets = 9
    attack.ensemble_queries = 5000
    # The ensemble's L-inf budgets (empty: every budget of linf_epsilons_255). It costs minutes per budget
    # on a CPU, so tables that report a few budgets run only those.
    attack.ensemble_epsilons_255 = ()
    # The adaptive attack on D maximises its joint margin (a wrong real class above the true class and
    # "fake"); this adds weight x D's "real" log-odds on top (0: the margin alone, which flips more).
    attack.adaptive_weight = 0.0
    attack.max_examples = 0  # 0: the whole test split
    attack.models = ()  # which of the run's classifiers to attack (e.g. ("D",)); empty: all of them
    return attack


def saliency_config() -> ml_collections.ConfigDict:
    """The counterfactual map |x - x_hat| as evaluation and `--mode=explain` read it, and the local-contrast
    baseline it is compared with (never changes training)."""
    saliency = ml_collections.ConfigDict()
    saliency.reduce = "mean"  # over colour channels: "mean" or "max"
    saliency.blur_radius = 0  # box blur of the counterfactual saliency before thresholding
    # The map averaged over the image's flips and transpositions: "identity", "flips" (4) or "dihedral" (8);
    # chosen on validation (docs/explaining.md, "Views").
    saliency.views = "dihedral"
    saliency.contrast_radius = 2  # the local-contrast baseline's neighbourhood
    return saliency


def explain_config() -> ml_collections.ConfigDict:
    """How `--mode=explain` turns saliency into masks and scores them (never changes training)."""
    explain = ml_collections.ConfigDict()
    explain.fixed_fraction = 0.5  # "fixed" thresholding: s > fraction * max(s) in each image
    explain.top_k_percent = 0.0  # "top_k": 0 = the validation split's mean damage share per damaged image
    explain.ig_steps = 16  # integrated gradients: gradients along the path from a black image
    explain.histogram_bins = 1024  # AUROC / AP resolution on [0, 1]
    explain.max_figures = 24  # per-image figures written (contact sheets always show best and worst)
    explain.tolerance = 2  # tolerant F1 (ODS / OIS): pixels within this Euclidean distance match
    explain.centerline_tolerance = 4  # clIoU: skeletons dilated by a disk of this radius
    # Thin-mask options, each scored as a row of its own (chosen on validation, never replacing a map):
    explain.thin_nms = True  # the run's own map with non-maximum suppression across the crack
    explain.thin_reduce = "min"  # GAN runs: |x - x_hat| with this sharper channel reduction, no blur ("": off)
    explain.contact_rows = 8
    return explain


def shrink_to_tiny(config: ml_collections.ConfigDict) -> None:
    """Seconds per run on a 2-core CPU: smoke tests and CI."""
    config.data.image_size = 32
    config.data.num_train = 64
    config.data.num_validation = 16
    config.data.num_test = 16
    config.batch_size = 8
    config.num_steps = 6
    config.generator.width = 8
    config.generator.depth = 2
    config.discriminator.widths = (8, 16)
    config.log_every = 2
    config.image_every = 3
    config.eval_every = 3
    config.checkpoint_every = 3
    config.eval.batch_size = 8
    config.eval.num_image_rows = 2
    config.explain.ig_steps = 4
    config.explain.max_figures = 4
    config.explain.contact_rows = 3
    config.adversarial_training.num_steps = 2
    config.attack.paper_step_sizes_255 = (1.0, 4.0)
    config.attack.linf_epsilons_255 = (2.0, 8.0)
    config.attack.l2_epsilons = (0.5,)
    config.attack.iterations = 3
    config.attack.paper_iterations = 3
    config.attack.strong_iterations = 4
    config.attack.strong_restarts = 2
    config.attack.ensemble_iterations = 3
    config.attack.ensemble_targets = 1
    config.attack.ensemble_queries = 5


def grow_to_accelerator(config: ml_collections.ConfigDict) -> None:
    """A GPU or TPU: 128 px, wider and deeper networks, the paper's cycle loss, larger batches."""
    config.data.image_size = 128
    config.data.num_train = 32768
    config.data.num_validation = 1024
    config.data.num_test = 2048
    config.batch_size = 256
    config.num_steps = 20000
    config.loss.num_cycles = 1
    config.attack.strong_iterations = 100
    config.attack.strong_restarts = 10
    config.generator.width = 64
    config.generator.depth = 3
    config.discriminator.widths = (64, 128, 256, 256)
    config.discriminator.blocks_per_stage = 2
    config.log_every = 100
    config.image_every = 2000
    config.eval_every = 2000
    config.checkpoint_every = 2000
    config.eval.batch_size = 256
