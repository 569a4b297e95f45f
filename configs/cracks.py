"""Counterfactual GAN on the embedded synthetic crack dataset.

    python -m cfjax.main --config=configs/cracks.py              # laptop / 2-core CPU, <= 15 min
    python -m cfjax.main --config=configs/cracks.py:tiny         # seconds: smoke tests and CI
    python -m cfjax.main --config=configs/cracks.py:accelerator  # GPU / TPU: 128 px, wider, longer

Any field can be overridden with --config.FIELD=VALUE (e.g. --config.num_steps=500).
"""

import ml_collections

VARIANTS = ("default", "tiny", "accelerator")


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    """The default is sized for a 2-core CPU; `variant` shrinks or grows the run."""
    variant = variant or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown config variant {variant!r}; choose one of {VARIANTS}")
    config = ml_collections.ConfigDict()
    config.name = "cracks" if variant == "default" else f"cracks_{variant}"
    config.seed = 0
    config.num_classes = 2

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic"
    config.data.seed = 0
    config.data.image_size = 64
    config.data.num_train = 8192
    config.data.augment = True  # random flips and 90-degree rotations
    config.data.num_validation = 256
    config.data.num_test = 512

    config.batch_size = 16
    config.num_steps = 4500
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
    # D must learn the classes early (design.md, section 6): it gets the larger step.
    for name, learning_rate in (("generator", 5e-4), ("discriminator", 1e-3)):
        opt = ml_collections.ConfigDict()
        opt.learning_rate = learning_rate
        opt.b1 = 0.5
        opt.b2 = 0.999
        opt.eps = 1e-8
        opt.clip_norm = 0.0
        opt.schedule = "constant"
        opt.warmup_steps = 0
        config.optimizer[name] = opt

    config.log_every = 50
    config.image_every = 600
    config.eval_every = 600
    config.checkpoint_every = 500
    config.keep_checkpoints = 3

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64
    config.eval.num_thresholds = 101
    config.eval.saliency_reduce = "mean"
    config.eval.contrast_radius = 2
    config.eval.num_image_rows = 6

    if variant == "tiny":
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
    elif variant == "accelerator":
        config.data.image_size = 128
        config.data.num_train = 32768
        config.data.num_validation = 1024
        config.data.num_test = 2048
        config.batch_size = 256
        config.num_steps = 20000
        config.loss.num_cycles = 1
        config.generator.width = 64
        config.generator.depth = 3
        config.discriminator.widths = (64, 128, 256, 256)
        config.discriminator.blocks_per_stage = 2
        config.log_every = 100
        config.image_every = 2000
        config.eval_every = 2000
        config.checkpoint_every = 2000
        config.eval.batch_size = 256
    return config
