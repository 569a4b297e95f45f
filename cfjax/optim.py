"""optax optimizers from `config.optimizer.<network>`: Adam with optional clipping, warm-up and schedules."""

import ml_collections
import optax

SCHEDULES = ("constant", "cosine", "linear")


def make_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Learning rate against step, with an optional linear warm-up."""
    warmup = int(cfg.warmup_steps)
    decay_steps = max(num_steps - warmup, 1)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.learning_rate)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps)
    elif cfg.schedule == "linear":
        main = optax.linear_schedule(cfg.learning_rate, 0.0, decay_steps)
    else:
        raise ValueError(f"optimizer schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
    if warmup <= 0:
        return main
    ramp = optax.linear_schedule(0.0, cfg.learning_rate, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """Adam with the configured betas, preceded by global-norm clipping when clip_norm > 0."""
    adam = optax.adam(make_schedule(cfg, num_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if cfg.clip_norm and cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adam)
    return adam
