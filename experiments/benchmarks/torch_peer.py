"""A PyTorch peer of cfjax's GAN: G, D, one training step and L-inf PGD, computing the same functions as
cfjax so a benchmark can time the two frameworks on identical work.

    python experiments/benchmarks/torch_peer.py --check   # correctness against cfjax (no timing)

* Modules mirror `cfjax.models` layer for layer and register their submodules under Flax's auto-names
  (`ResBlock_3.Conv_0`, `class_head`, ...), so Flax parameter trees load one-to-one (`TorchGan.load_flax`)
  and export back (`flax_params`). Flax's NHWC conventions are kept where they change the function:
  space-to-depth orders channels (fy, fx, c), not as `F.pixel_unshuffle` (c, fy, fx); GroupNorm uses Flax's
  epsilon 1e-6; fresh weights follow Flax's initialisers (LeCun normal, zero biases, zero image head).
* `TorchGan.step` is `cfjax.steps.gan_step`: G's forward pass runs once, D is updated on real and detached
  generated images, G's loss is taken against the *updated* D, then Adam (optax's formula) and the EMA of G.
  Losses stay tensors (no host sync). Unlike cfjax, a non-finite step is flagged but not rolled back.
* `pgd` is `cfjax.attacks.pgd` with its default spec (L-inf, CE on D's first K logits, uniform start, one
  restart, each sample keeping its most adversarial iterate); `torchattacks_pgd` is the library's PGD.
* `classifier_from_arrays` loads a trained run's D or plain classifier from numpy arrays, for cross-checks
  on the same weights (experiments/attack_cross_check.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GROUP_NORM_EPSILON = 1e-6  # flax.linen.GroupNorm's default (torch's is 1e-5)
MAX_GROUPS = 8  # cfjax.models.layers.make_norm
# flax.linen.initializers.lecun_normal: a normal truncated at +-2 standard deviations, rescaled so that
# the truncated distribution has variance 1 / fan_in (the constant is the std of a unit normal cut at +-2).
_TRUNCATED_NORMAL_STD = 0.87962566103423978


class TorchCompileError(RuntimeError):
    """`torch.compile` failed (it compiles at the first step): one exception type for the harness to catch."""


# ----------------------------------------------------------------------------------------------- layers


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], as `cfjax.models.layers.to_signed`."""
    return images * 2.0 - 1.0


def pixel_unshuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Space-to-depth in cfjax's channel order (fy, fx, c), done on an NHWC view of the NCHW tensor.

    The result is channels-last in memory whatever the input was; the modules restore their own format.
    """
    b, c, h, w = x.shape
    x = x.permute(0, 2, 3, 1).reshape(b, h // factor, factor, w // factor, factor, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, h // factor, w // factor, factor * factor * c)
    return x.permute(0, 3, 1, 2)


def jax_abs(x: torch.Tensor) -> torch.Tensor:
    """|x| with JAX's derivative at 0, which is +1 (torch's abs has 0 there). It matters: at G's initialisation
    the image head is zero, x_hat == x exactly, and cfjax's proximity term already pushes G's last layer."""
    return torch.where(x >= 0, x, -x)


def jax_clip01(x: torch.Tensor) -> torch.Tensor:
    """clip(x, 0, 1) as jnp.clip = minimum(maximum(x, 0), 1): half the gradient at exactly 0 or 1 (torch.clamp
    passes all of it), which G meets at its initialisation on saturated pixels of real images."""
    return torch.minimum(torch.maximum(x, x.new_zeros(())), x.new_ones(()))


def _groups(channels: int, wanted: int = MAX_GROUPS) -> int:
    """The largest group count <= wanted that divides the channel count (cfjax's `_groups`)."""
    for groups in range(min(wanted, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels), channels, eps=GROUP_NORM_EPSILON)


def _conv(in_channels: int, out_channels: int, size: int = 3, bias: bool = True) -> nn.Conv2d:
    """Flax `nn.Conv` with SAME padding (odd kernels only)."""
    return nn.Conv2d(in_channels, out_channels, size, padding=size // 2, bias=bias)


def _pool(h: torch.Tensor) -> torch.Tensor:
    """concat(mean over HW, max over HW): the pooling of both cfjax networks."""
    return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


class _FlaxNamed(nn.Module):
    """Registers submodules under Flax Linen's auto-names (`Conv_0`, `Conv_1`, `ResBlock_0`, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[str, int] = {}

    def _add(self, kind: str, module: nn.Module) -> str:
        name = f"{kind}_{self._counts.get(kind, 0)}"
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self.add_module(name, module)
        return name


class ResBlock(nn.Module):
    """Pre-activation residual block: norm -> swish -> conv, twice, plus a 1x1 shortcut when widths differ."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__()
        # Flax creates GroupNorm_0, Conv_0, GroupNorm_1, Conv_1, then the shortcut Conv_2.
        self.GroupNorm_0 = _group_norm(in_channels)
        self.Conv_0 = _conv(in_channels, features)
        self.GroupNorm_1 = _group_norm(features)
        self.Conv_1 = _conv(features, features)
        self.Conv_2 = _conv(in_channels, features, 1, bias=False) if in_channels != features else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(F.silu(self.GroupNorm_0(x)))
        h = self.Conv_1(F.silu(self.GroupNorm_1(h)))
        return (x if self.Conv_2 is None else self.Conv_2(x)) + h


class Downsample(nn.Module):
    """Space-to-depth (cfjax order), then a 3x3 convolution."""

    def __init__(self, in_channels: int, features: int, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.memory_format = memory_format
        self.Conv_0 = _conv(4 * in_channels, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Conv_0(pixel_unshuffle(x, 2).contiguous(memory_format=self.memory_format))


class Upsample(nn.Module):
    """Nearest-neighbour x2 (= jnp.repeat twice), then a 3x3 convolution."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__()
        self.Conv_0 = _conv(in_channels, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Conv_0(F.interpolate(x, scale_factor=2, mode="nearest"))


def _require(value: Any, allowed: tuple, field: str) -> None:
    if value not in allowed:
        raise NotImplementedError(f"torch_peer supports {field} in {allowed}, got {value!r}")


# ----------------------------------------------------------------------------------------------- models


class Generator(_FlaxNamed):
    """`cfjax.models.Generator` (norm "group", stem "unshuffle"): forward(images, target) -> (x_hat, logits)."""

    def __init__(self, num_classes: int, width: int = 32, depth: int = 3, norm: str = "group",
                 output: str = "residual", stem: str = "unshuffle", head_dropout: float = 0.1,
                 out_channels: int = 0, in_channels: int = 3,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        super().__init__()
        _require(norm, ("group",), "generator.norm")
        _require(stem, ("unshuffle",), "generator.stem")
        _require(output, ("residual", "image"), "generator.output")
        self.num_classes, self.output, self.memory_format = num_classes, output, memory_format
        k, fmt = num_classes, memory_format
        self._add("Conv", _conv(4 * in_channels, width))
        self.encoder, channels = [], width
        for level in range(depth):
            features = width * 2**level
            block = self._add("ResBlock", ResBlock(channels, features))
            down = self._add("Downsample", Downsample(features, features * 2, fmt))
            self.encoder.append((block, down))
            channels = features * 2
        bottom = width * 2**depth
        self.bottleneck = self._add("ResBlock", ResBlock(channels, bottom))
        self.head_dropout = nn.Dropout(head_dropout)
        self.class_head = nn.Linear(2 * bottom, num_classes)
        self.target_block = self._add("ResBlock", ResBlock(bottom + k, bottom))
        self.decoder, channels = [], bottom
        for level in reversed(range(depth)):
            features = width * 2**level
            up = self._add("Upsample", Upsample(channels, features))
            block = self._add("ResBlock", ResBlock(2 * features + k, features))
            self.decoder.append((up, block))
            channels = features
        self.final_norm = self._add("GroupNorm", _group_norm(channels))
        full = max(width // 2, 4)
        self.full_up = self._add("Upsample", Upsample(channels, full))
        self.full_conv = self._add("Conv", _conv(full + in_channels, full))
        self.image_head = _conv(full, out_channels or in_channels)
        _flax_init(self, zero=(self.image_head,) if output == "residual" else ())

    def _planes(self, target_one_hot: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """One-hot target planes the size of `like`, materialised in the model's memory format so that the
        concatenation keeps it (torch.cat with an expanded tensor falls back to NCHW)."""
        planes = target_one_hot[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])
        return planes.contiguous(memory_format=self.memory_format)

    def forward(self, images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = lambda name: getattr(self, name)
        one_hot = F.one_hot(target.long(), self.num_classes).to(images.dtype)
        signed = to_signed(images)
        h = self.Conv_0(pixel_unshuffle(signed, 2).contiguous(memory_format=self.memory_format))
        skips = []
        for block, down in self.encoder:
            h = m(block)(h)
            skips.append(h)
            h = m(down)(h)
        h = m(self.bottleneck)(h)
        class_logits = self.class_head(self.head_dropout(_pool(h)))

        h = m(self.target_block)(torch.cat([h, self._planes(one_hot, h)], dim=1))
        for (up, block), skip in zip(self.decoder, reversed(skips)):
            h = m(up)(h)
            h = m(block)(torch.cat([h, skip, self._planes(one_hot, h)], dim=1))
        h = F.silu(m(self.final_norm)(h))
        h = m(self.full_up)(h)
        h = F.silu(m(self.full_conv)(torch.cat([h, signed], dim=1)))
        out = self.image_head(h)
        if self.output == "residual":
            return jax_clip01(images + torch.tanh(out)), class_logits
        return (torch.tanh(out) + 1.0) / 2.0, class_logits


class Discriminator(_FlaxNamed):
    """`cfjax.models.ResNetClassifier` (norm "group", stem "unshuffle"); D has K+1 outputs."""

    def __init__(self, num_outputs: int, widths: tuple = (32, 64, 128), blocks_per_stage: int = 1,
                 norm: str = "group", stem: str = "unshuffle", dropout: float = 0.0, in_channels: int = 3,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        super().__init__()
        _require(norm, ("group",), "discriminator.norm")
        _require(stem, ("unshuffle",), "discriminator.stem")
        self.memory_format = memory_format
        widths = tuple(widths)
        self._add("Conv", _conv(4 * in_channels, widths[0]))
        self.layers, channels = [], widths[0]
        for stage, features in enumerate(widths):
            if stage > 0:
                self.layers.append(self._add("Downsample", Downsample(channels, features, memory_format)))
            for _ in range(blocks_per_stage):
                self.layers.append(self._add("ResBlock", ResBlock(features, features)))
            channels = features
        self.GroupNorm_0 = _group_norm(channels)
        self.dropout = nn.Dropout(dropout)
        self.Dense_0 = nn.Linear(2 * channels, num_outputs)
        _flax_init(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(pixel_unshuffle(to_signed(images), 2).contiguous(memory_format=self.memory_format))
        for name in self.layers:
            h = getattr(self, name)(h)
        h = F.silu(self.GroupNorm_0(h))
        return self.Dense_0(self.dropout(_pool(h)))


class ClassLogits(nn.Module):
    """D's hybrid class readout, its first K logits: what both PGD variants attack."""

    def __init__(self, discriminator: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.discriminator, self.num_classes = discriminator, num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.discriminator(images)[:, : self.num_classes]


@torch.no_grad()
def _flax_init(module: nn.Module, zero: tuple = ()) -> None:
    """Flax's defaults: LeCun-normal kernels, zero biases, unit GroupNorm scales; `zero` modules all zero."""
    for layer in module.modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        if any(layer is z for z in zero):
            layer.weight.zero_()
        else:
            fan_in = layer.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / _TRUNCATED_NORMAL_STD
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        if layer.bias is not None:
            layer.bias.zero_()


# --------------------------------------------------------------------------------- Flax <-> torch weights


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _flax_to_torch(name: str, value: Any) -> tuple[str, torch.Tensor]:
    """('ResBlock_0.Conv_0.kernel', (kh, kw, in, out)) -> ('ResBlock_0.Conv_0.weight', (out, in, kh, kw))."""
    path, leaf = name.rsplit(".", 1)
    array = torch.from_numpy(np.array(value, dtype=np.float32))
    if leaf == "kernel":
        return f"{path}.weight", array.permute(3, 2, 0, 1) if array.ndim == 4 else array.T
    if leaf == "scale":
        return f"{path}.weight", array
    return name, array


def load_flax_params(module: nn.Module, params: Mapping) -> None:
    """Copy a Flax parameter tree into `module`; every parameter on both sides must be matched exactly."""
    converted = dict(_flax_to_torch(name, value) for name, value in _flatten(params).items())
    own = dict(module.named_parameters())
    if converted.keys() != own.keys():
        raise ValueError(f"Flax and torch parameters differ: only in Flax {sorted(converted.keys() - own.keys())}, "
                         f"only in torch {sorted(own.keys() - converted.keys())}")
    with torch.no_grad():
        for name, value in converted.items():
            if value.shape != own[name].shape:
                raise ValueError(f"{name}: Flax shape {tuple(value.shape)} != torch {tuple(own[name].shape)}")
            own[name].copy_(value)


def classifier_from_arrays(arrays: Mapping[str, Any], network: Mapping[str, Any]) -> Discriminator:
    """A trained cfjax `ResNetClassifier` (D with K+1 outputs, or the plain classifier with K) in eval mode, from
    its parameters as numpy arrays, nested like Flax's tree or flat ('ResBlock_0.Conv_0.kernel' -> array; what
    experiments/attack_cross_check.py exports from `cfjax.restore`). `network` holds the constructor's fields
    (num_outputs, widths, blocks_per_stage, norm, stem, dropout) as in the run's `config.discriminator`."""
    module = Discriminator(int(network["num_outputs"]), tuple(network["widths"]), int(network["blocks_per_stage"]),
                           network.get("norm", "group"), network.get("stem", "unshuffle"),
                           float(network.get("dropout", 0.0)))
    load_flax_params(module, arrays)
    return module.eval()


def flax_params(module: nn.Module, tensors: Mapping[str, torch.Tensor] | None = None) -> dict:
    """The module's parameters (or `tensors` named like them, e.g. the EMA) as a nested Flax-layout tree."""
    tensors = dict(module.named_parameters()) if tensors is None else tensors
    tree: dict = {}
    for name, tensor in tensors.items():
        path, leaf = name.rsplit(".", 1)
        layer = module.get_submodule(path)
        array = tensor.detach().cpu()
        if isinstance(layer, nn.Conv2d) and leaf == "weight":
            leaf, array = "kernel", array.permute(2, 3, 1, 0)
        elif isinstance(layer, nn.Linear) and leaf == "weight":
            leaf, array = "kernel", array.T
        elif isinstance(layer, nn.GroupNorm) and leaf == "weight":
            leaf = "scale"
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})
        node[leaf] = np.ascontiguousarray(array.numpy())
    return tree


# ------------------------------------------------------------------------------------------- GAN training


def _schedule(cfg: Any, num_steps: int) -> Callable[[int], float]:
    """`cfjax.optim.make_schedule` in plain Python: learning rate of the update number `count` (from 0)."""
    learning_rate, warmup = float(cfg.learning_rate), int(cfg.get("warmup_steps", 0))
    decay_steps = max(num_steps - warmup, 1)
    if cfg.schedule == "constant":
        main = lambda count: learning_rate
    elif cfg.schedule == "cosine":
        main = lambda count: learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(count, decay_steps) / decay_steps))
    elif cfg.schedule == "linear":
        main = lambda count: learning_rate * (1.0 - min(count, decay_steps) / decay_steps)
    else:
        raise NotImplementedError(f"torch_peer supports optimizer.*.schedule in constant/cosine/linear, "
                                  f"got {cfg.schedule!r}")
    if warmup <= 0:
        return main
    return lambda count: learning_rate * count / warmup if count < warmup else main(count - warmup)


class _Optimizer:
    """optax.adam (+ clip_by_global_norm when clip_norm > 0) over a fixed list of parameters.

    torch's Adam is optax's formula (eps added to sqrt of the bias-corrected second moment); the fused CPU
    kernel is used where this torch build has it.
    """

    def __init__(self, params: list[nn.Parameter], cfg: Any, num_steps: int) -> None:
        self.params, self.clip_norm = params, float(cfg.clip_norm or 0.0)
        self.schedule = _schedule(cfg, num_steps)
        self.constant = cfg.schedule == "constant" and int(cfg.get("warmup_steps", 0)) <= 0
        kwargs = {"lr": self.schedule(0), "betas": (cfg.b1, cfg.b2), "eps": cfg.get("eps", 1e-8)}
        try:
            self.adam = torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            self.adam = torch.optim.Adam(params, foreach=True, **kwargs)

    def apply(self, grads: tuple[torch.Tensor, ...], count: int) -> torch.Tensor:
        """One update; returns the global gradient norm (before clipping), as cfjax's metrics."""
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if self.clip_norm > 0:
            scale = torch.where(norm < self.clip_norm, torch.ones_like(norm), self.clip_norm / norm)
            grads = torch._foreach_mul(grads, scale)
        for param, grad in zip(self.params, grads):
            param.grad = grad
        if not self.constant:
            for group in self.adam.param_groups:
                group["lr"] = self.schedule(count)
        self.adam.step()
        for param in self.params:
            param.grad = None
        return norm


class TorchGan:
    """G, D, their optimizers and G's EMA (`g_ema`: parameter name -> tensor), trained by `step` as
    `cfjax.steps.gan_step` trains a `TrainState`."""

    def __init__(self, config: Any, *, channels_last: bool = True, compile: bool = False) -> None:
        self.config = config
        self.num_classes = int(config.num_classes)
        if self.num_classes < 2:
            raise NotImplementedError(f"torch_peer needs num_classes >= 2, got {self.num_classes}")
        # `remat` changes how cfjax runs, not what it computes: the peer never rematerialises.
        _require(config.get("compute_dtype", "float32"), ("float32",), "compute_dtype")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = Generator(self.num_classes, **config.generator.to_dict(), memory_format=self.memory_format)
        d_fields = config.discriminator.to_dict()
        self.discriminator = Discriminator(self.num_classes + 1, **d_fields, memory_format=self.memory_format)
        self.generator.to(memory_format=self.memory_format)
        self.discriminator.to(memory_format=self.memory_format)
        self.compile = compile
        # Static shapes: one process benchmarks several image sizes, and dynamic-shape kernels failed to
        # compile here (Inductor: "cannot determine truth value of Relational") when the size changed.
        self._g_call: Callable = torch.compile(self.generator, dynamic=False) if compile else self.generator
        self._d_call: Callable = torch.compile(self.discriminator, dynamic=False) if compile else self.discriminator
        self._compiled_step_ran = False
        self.targets_rng = torch.Generator().manual_seed(int(config.seed))
        self.reset_training_state()

    def reset_training_state(self) -> None:
        """Fresh Adam states, step 0, and the EMA equal to G: what `cfjax.steps.init_train_state` starts from."""
        self.step_count = 0
        self._g_params = list(self.generator.parameters())
        self._d_params = list(self.discriminator.parameters())
        opt = self.config.optimizer
        self.g_opt = _Optimizer(self._g_params, opt.generator, int(self.config.num_steps))
        self.d_opt = _Optimizer(self._d_params, opt.discriminator, int(self.config.num_steps))
        self.g_ema = {name: p.detach().clone() for name, p in self.generator.named_parameters()}

    def load_flax(self, g_params: Mapping, d_params: Mapping) -> None:
        """Load Flax parameter trees (numpy or jax leaves) into G and D; optimizer states and EMA restart."""
        load_flax_params(self.generator, g_params)
        load_flax_params(self.discriminator, d_params)
        self.reset_training_state()

    def param_counts(self) -> tuple[int, int]:
        """(G, D) parameter counts."""
        count = lambda module: sum(p.numel() for p in module.parameters())
        return count(self.generator), count(self.discriminator)

    def _generate(self, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> dict:
        """x_hat = G(x, t), then `num_cycles` round trips G(., y) [-> G(., t)] (cfjax.steps._generate)."""
        counterfactual, head_logits = self._g_call(images, targets)
        cycle_back, cycle_forward, current = [], [], counterfactual
        num_cycles = int(self.config.loss.num_cycles)
        for c in range(num_cycles):
            back, _ = self._g_call(current, labels)
            cycle_back.append(back)
            if c + 1 < num_cycles:
                current, _ = self._g_call(back, targets)
                cycle_forward.append(current)
        return {"counterfactual": counterfactual, "head_logits": head_logits, "cycle_back": cycle_back,
                "cycle_forward": cycle_forward}

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One GAN update; returns d_loss, g_loss, the gradient norms and `finite`, all as tensors.

        With `compile=True` the first call compiles; a failure there is raised as `TorchCompileError`.
        """
        if not self.compile or self._compiled_step_ran:
            return self._step(images, labels)
        try:
            metrics = self._step(images, labels)
        except Exception as error:  # dynamo / inductor raise many types; the harness needs one
            message = " ".join(str(error).split())[:500]
            raise TorchCompileError(f"torch.compile failed on the first step: {type(error).__name__}: {message}") \
                from error
        self._compiled_step_ran = True
        return metrics

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        loss_cfg, k = self.config.loss, self.num_classes
        labels = labels.long()
        shift = torch.randint(1, k, labels.shape, generator=self.targets_rng).to(labels.device)
        targets = (labels + shift) % k
        self.generator.train()
        self.discriminator.train()

        outputs = self._generate(images, labels, targets)
        fakes = [outputs["counterfactual"]]
        if loss_cfg.fake_on_cycles:
            fakes += outputs["cycle_back"] + outputs["cycle_forward"]
        fake_class = torch.full_like(labels, k)
        # One D call per image set, as cfjax (which avoids resharding a concatenated batch).
        d_loss = F.cross_entropy(self._d_call(images), labels) + loss_cfg.fake_weight * sum(
            F.cross_entropy(self._d_call(fake.detach()), fake_class) for fake in fakes)
        d_grads = torch.autograd.grad(d_loss, self._d_params)
        d_grad_norm = self.d_opt.apply(d_grads, self.step_count)

        # G's loss against the updated D, back through G's single forward pass; D's weights get no gradient.
        counterfactual = outputs["counterfactual"]
        cycle = sum((jax_abs(back - images).mean() for back in outputs["cycle_back"]), images.new_zeros(()))
        g_loss = (loss_cfg.adversarial_weight * F.cross_entropy(self._d_call(counterfactual), targets)
                  + loss_cfg.cls_weight * F.cross_entropy(outputs["head_logits"], labels)
                  + loss_cfg.cycle_weight * cycle
                  + loss_cfg.prox_weight * jax_abs(counterfactual - images).mean())
        g_grads = torch.autograd.grad(g_loss, self._g_params, allow_unused=True, materialize_grads=True)
        g_grad_norm = self.g_opt.apply(g_grads, self.step_count)
        self._update_ema()
        self.step_count += 1

        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        finite = torch.isfinite(torch.stack([d_loss, g_loss, d_grad_norm, g_grad_norm])).all()
        return {"d_loss": d_loss, "g_loss": g_loss, "d_grad_norm": d_grad_norm, "g_grad_norm": g_grad_norm,
                "finite": finite}

    @torch.no_grad()
    def _update_ema(self) -> None:
        """cfjax.steps._ema: rate = min(decay, (1 + step) / (10 + step)), step counted before this update."""
        rate = min(float(self.config.ema_decay), (1.0 + self.step_count) / (10.0 + self.step_count))
        ema = list(self.g_ema.values())
        torch._foreach_mul_(ema, rate)
        torch._foreach_add_(ema, [p.detach() for p in self._g_params], alpha=1.0 - rate)


def build_gan(config: Any, *, channels_last: bool = True, compile: bool = False) -> TorchGan:
    """The peer of `cfjax.steps.build_gan_models(config)` plus a fresh state (Flax-style initialisation)."""
    return TorchGan(config, channels_last=channels_last, compile=compile)


def to_torch(images_nhwc: Any, channels_last: bool = True) -> torch.Tensor:
    """NHWC float images (numpy or jax) -> an NCHW float32 tensor, channels-last in memory when asked."""
    images = torch.from_numpy(np.asarray(images_nhwc, dtype=np.float32)).permute(0, 3, 1, 2)
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# ------------------------------------------------------------------------------------------------- attacks


def _project(images: torch.Tensor, candidates: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Nearest point of the L-inf ball around `images`, clipped to [0, 1] (cfjax.attacks.geometry.project)."""
    return torch.clamp(images + torch.clamp(candidates - images, -epsilon, epsilon), 0.0, 1.0)


def pgd(d_logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor, *,
        epsilon: float, step_size: float, num_steps: int, generator: torch.Generator | None = None,
        num_classes: int | None = None, random_start: bool = True) -> torch.Tensor:
    """Untargeted L-inf PGD as `cfjax.attacks.pgd` with its default spec; returns the adversarial images.

    `d_logits_fn` maps images in [0, 1] to logits; the objective is the cross-entropy of its first
    `num_classes` logits (all of them when None, e.g. for a `ClassLogits` wrapper). An `nn.Module` is put in
    eval mode for the attack. `generator` seeds the uniform start. Like cfjax, each sample keeps its most
    adversarial iterate (a success first, then the highest loss), the final iterate included.
    """
    modes = {layer: layer.training for layer in d_logits_fn.modules()} if isinstance(d_logits_fn, nn.Module) else {}
    if isinstance(d_logits_fn, nn.Module):
        d_logits_fn.eval()
    images, labels = images.detach(), labels.long()

    def evaluate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = d_logits_fn(x)
        logits = logits if num_classes is None else logits[:, :num_classes]
        return F.cross_entropy(logits, labels, reduction="none"), logits.argmax(dim=-1) != labels

    def keep_better(x, values, success, best):
        best_x, best_values, best_success = best
        take = (success & ~best_success) | ((success == best_success) & (values > best_values))
        return (torch.where(take[:, None, None, None], x, best_x), torch.where(take, values, best_values),
                success | best_success)

    x = images
    if random_start:
        noise = torch.empty_like(images).uniform_(-1.0, 1.0, generator=generator) * epsilon
        x = _project(images, images + noise, epsilon)
    best = (x, torch.full(labels.shape, -math.inf, device=x.device), torch.zeros_like(labels, dtype=torch.bool))
    try:
        for _ in range(num_steps):
            x = x.detach().requires_grad_(True)
            values, success = evaluate(x)
            (gradient,) = torch.autograd.grad(values.sum(), x)
            x = x.detach()
            best = keep_better(x, values.detach(), success, best)
            x = _project(images, x + step_size * gradient.sign(), epsilon)
        with torch.no_grad():
            best = keep_better(x, *evaluate(x), best)
    finally:
        for layer, training in modes.items():
            layer.training = training
    return best[0]


def torchattacks_pgd(discriminator: nn.Module, num_classes: int, images: torch.Tensor, labels: torch.Tensor, *,
                     epsilon: float, step_size: float, num_steps: int) -> torch.Tensor:
    """torchattacks.PGD on D's first K logits (random start; it returns the last iterate, in eval mode)."""
    import torchattacks

    attack = torchattacks.PGD(ClassLogits(discriminator, num_classes), eps=epsilon, alpha=step_size,
                              steps=num_steps, random_start=True)
    return attack(images, labels.long())


# -------------------------------------------------------------------------------------------------- checks


def _load_config(name: str, variant: str = "default") -> Any:
    if os.path.join(REPO, "configs") not in sys.path:
        sys.path.insert(0, os.path.join(REPO, "configs"))
    return __import__(name).get_config(variant)


def _max_diff(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _relative_diff(a: Any, reference: Any) -> float:
    """Max abs difference over the reference's largest magnitude (at least 1): logits grow with the width."""
    return _max_diff(a, reference) / max(1.0, float(np.max(np.abs(np.asarray(reference)))))


def _tree_diffs(a: Mapping, b: Mapping) -> np.ndarray:
    """|a - b| of every parameter of two trees with the same names, flattened into one array."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    assert flat_a.keys() == flat_b.keys(), sorted(flat_a.keys() ^ flat_b.keys())
    return np.concatenate([np.abs(np.asarray(flat_a[k], np.float64) - np.asarray(flat_b[k], np.float64)).ravel()
                           for k in sorted(flat_a)])


def _cfjax_init(config: Any, size: int, seed: int = 0) -> tuple:
    """cfjax's G and D with fresh parameters, as `steps.init_train_state` makes them."""
    import jax
    import jax.numpy as jnp

    from cfjax.models import make_discriminator, make_generator

    generator, discriminator = make_generator(config), make_discriminator(config)
    images, labels = jnp.zeros((1, size, size, 3)), jnp.zeros((1,), jnp.int32)
    g_params = generator.init(jax.random.PRNGKey(seed), images, labels)["params"]
    d_params = discriminator.init(jax.random.PRNGKey(seed + 1), images)["params"]
    return generator, discriminator, g_params, d_params


def check_param_counts() -> dict:
    """(G, D) parameter counts of Flax and torch, per config and image size (shapes only: jax.eval_shape)."""
    import jax

    count = lambda tree: int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
    counts = {}
    for name, variant, size in (("cracks", "default", 64), ("cracks", "default", 128), ("cracks", "tiny", 32),
                                ("cracks", "accelerator", 128), ("fruits", "default", 64)):
        config = _load_config(name, variant)
        config.data.image_size = size
        g_shapes, d_shapes = jax.eval_shape(lambda c=config, s=size: _cfjax_init(c, s)[2:])
        key = f"{name}:{variant}@{size}px"
        counts[key] = {"flax": [count(g_shapes), count(d_shapes)], "torch": list(build_gan(config).param_counts())}
        assert counts[key]["flax"] == counts[key]["torch"], (key, counts[key])
    return counts


def check_forward(rng: np.random.Generator) -> dict:
    """G (eval mode) and D on random images with the same weights: max abs differences to Flax.

    The Flax weights are perturbed so that no layer is trivial (the image head is zero at init, GroupNorm's
    scale one and bias zero); the accelerator config covers depth 3, four stages and two blocks per stage.
    """
    import jax

    def perturb(tree, seed):
        leaves, structure = jax.tree.flatten(tree)
        keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
        return jax.tree.unflatten(structure, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])

    forward = {}
    for name, variant, size in (("cracks", "default", 64), ("cracks", "accelerator", 64)):
        config = _load_config(name, variant)
        generator, discriminator, g_params, d_params = _cfjax_init(config, size)
        g_params, d_params = perturb(g_params, 2), perturb(d_params, 3)
        images = rng.uniform(size=(4, size, size, 3)).astype(np.float32)
        targets = rng.integers(0, config.num_classes, 4).astype(np.int32)
        x_hat, head = jax.jit(functools.partial(generator.apply, train=False))({"params": g_params}, images, targets)
        d_logits = jax.jit(discriminator.apply)({"params": d_params}, images)
        for channels_last in (True, False):
            gan = build_gan(config, channels_last=channels_last)
            gan.load_flax(g_params, d_params)
            gan.generator.eval()
            gan.discriminator.eval()
            with torch.no_grad():
                x = to_torch(images, channels_last)
                t_hat, t_head = gan.generator(x, torch.from_numpy(targets))
                t_logits = gan.discriminator(x)
            key = f"{name}:{variant}@{size}px,{'channels_last' if channels_last else 'nchw'}"
            forward[key] = {"G_image": _max_diff(t_hat.permute(0, 2, 3, 1), x_hat),
                            "G_head": _max_diff(t_head, head), "G_head_relative": _relative_diff(t_head, head),
                            "D_logits": _max_diff(t_logits, d_logits),
                            "D_logits_relative": _relative_diff(t_logits, d_logits),
                            "G_image_edit_max": _max_diff(x_hat, images)}
            worst = max(forward[key][k] for k in ("G_image", "G_head_relative", "D_logits_relative"))
            assert worst < 1e-4, (key, forward[key])
        assert np.max(_tree_diffs(flax_params(gan.generator), g_params)) == 0.0, "G weights do not round-trip"
        assert np.max(_tree_diffs(flax_params(gan.discriminator), d_params)) == 0.0, "D weights do not round-trip"
    return forward


def check_gan_step(rng: np.random.Generator, num_steps: int = 3) -> tuple[dict, Any]:
    """`num_steps` GAN updates of cfjax (jitted `steps.gan_step`) and of the peer from identical weights and
    batches, without dropout and with K = 2 (targets = 1 - y in both). Returns the figures and cfjax's state."""
    import jax
    import jax.numpy as jnp

    from cfjax import steps

    config = _load_config("cracks")
    config.generator.head_dropout = 0.0
    assert config.num_classes == 2 and config.discriminator.dropout == 0.0
    models = steps.build_gan_models(config)
    size, batch = config.data.image_size, config.batch_size
    state = steps.init_train_state(models, jax.random.PRNGKey(0), (size, size, 3), config.num_classes)
    jax_step = jax.jit(functools.partial(steps.gan_step, models=models, config=config))
    gan = build_gan(config, channels_last=True)
    gan.load_flax(state.g_params, state.d_params)
    lr = config.optimizer.generator.learning_rate
    figures = {}
    for step in range(1, num_steps + 1):
        # 8-bit levels, as decoded photos: some pixels are exactly 0 or 1, where clip's gradient is split.
        images = (np.round(rng.uniform(size=(batch, size, size, 3)) * 255) / 255).astype(np.float32)
        labels = (np.arange(batch) % 2).astype(np.int32)
        state, jax_metrics = jax_step(state, {"image": jnp.asarray(images), "label": jnp.asarray(labels)})
        metrics = gan.step(to_torch(images), torch.from_numpy(labels))
        row = {name: [float(jax_metrics[name]), float(metrics[name])]
               for name in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm")}
        row["finite"] = [bool(jax_metrics["finite"]), bool(metrics["finite"])]
        g_diffs = _tree_diffs(flax_params(gan.generator), state.g_params)
        d_diffs = _tree_diffs(flax_params(gan.discriminator), state.d_params)
        row["G_params"], row["D_params"] = float(g_diffs.max()), float(d_diffs.max())
        row["G_ema"] = float(_tree_diffs(flax_params(gan.generator, gan.g_ema), state.g_ema_params).max())
        # Adam's first updates are ~lr * sign(gradient): where a gradient is ~0, rounding can flip its sign and
        # move a weight by up to 2 lr, so count the weights that differ by more than 1% of G's learning rate.
        diffs = np.concatenate([g_diffs, d_diffs])
        row["params_off_by_1pct_lr"] = f"{int(np.sum(diffs > 0.01 * lr))}/{diffs.size}"
        figures[f"step_{step}"] = row
        for name in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm"):
            assert abs(row[name][0] - row[name][1]) <= 1e-4 * max(1.0, abs(row[name][0])), (step, name, row)
        assert row["finite"] == [True, True], row
        # A wrong gradient anywhere moves whole layers; a flipped sign moves single weights by at most ~2 lr.
        assert np.sum(diffs > 0.01 * lr) < 1e-4 * diffs.size, (step, row)
        assert max(row["G_params"], row["D_params"], row["G_ema"]) < 1e-2, (step, row)
    return figures, state


def check_pgd(rng: np.random.Generator, d_params: Mapping) -> dict:
    """Epsilon 0 is the identity; both PGD variants stay in the ball and in [0, 1]; with a zero start (no random
    draw to share) the hand-written PGD matches cfjax's `attacks.pgd`."""
    import jax
    import jax.numpy as jnp

    from cfjax.attacks import AttackSpec
    from cfjax.attacks import pgd as jax_pgd
    from cfjax.models import make_discriminator

    config = _load_config("cracks")
    k, size = config.num_classes, config.data.image_size
    discriminator = make_discriminator(config)
    gan = build_gan(config)
    gan.load_flax(_cfjax_init(config, size)[2], d_params)
    images_np = rng.uniform(size=(8, size, size, 3)).astype(np.float32)
    labels_np = (np.arange(8) % k).astype(np.int32)
    images, labels = to_torch(images_np), torch.from_numpy(labels_np)
    d_k = ClassLogits(gan.discriminator, k)
    attack = {"step_size": 1.0 / 255, "num_steps": 5}
    figures = {
        "pgd_eps0_max_change": _max_diff(pgd(d_k, images, labels, epsilon=0.0, **attack), images),
        "torchattacks_eps0_max_change": _max_diff(
            torchattacks_pgd(gan.discriminator, k, images, labels, epsilon=0.0, **attack), images),
    }
    assert figures["pgd_eps0_max_change"] == 0.0 and figures["torchattacks_eps0_max_change"] == 0.0, figures
    epsilon = 4.0 / 255
    for name, adversarial in (
            ("pgd", pgd(d_k, images, labels, epsilon=epsilon, generator=torch.Generator().manual_seed(0), **attack)),
            ("torchattacks", torchattacks_pgd(gan.discriminator, k, images, labels, epsilon=epsilon, **attack))):
        moved = _max_diff(adversarial, images)
        figures[f"{name}_linf_distance_255"] = moved * 255
        figures[f"{name}_range"] = [float(adversarial.min()), float(adversarial.max())]
        assert moved <= epsilon + 1e-6 and 0.0 <= adversarial.min() <= adversarial.max() <= 1.0, (name, figures)
    spec = AttackSpec(num_classes=k, start="zero")
    reference = jax_pgd(lambda x: discriminator.apply({"params": d_params}, x), jnp.asarray(images_np),
                        jnp.asarray(labels_np), jax.random.PRNGKey(0), spec=spec, epsilon=epsilon, **attack)
    ours = pgd(d_k, images, labels, epsilon=epsilon, random_start=False, **attack).permute(0, 2, 3, 1).numpy()
    figures["zero_start_vs_cfjax_max_abs_diff"] = _max_diff(ours, reference.adversarial)
    figures["zero_start_vs_cfjax_pixels_equal"] = float(np.mean(np.abs(ours - reference.adversarial) < 1e-6))
    assert figures["zero_start_vs_cfjax_pixels_equal"] > 0.99, figures
    return figures


def check() -> dict:
    """Correctness of the peer against cfjax (no timing); returns the figures, AssertionError on a failure."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    figures = {"param_counts": check_param_counts(), "forward_max_abs_diff": check_forward(rng)}
    figures["gan_step"], state = check_gan_step(rng)
    figures["pgd"] = check_pgd(rng, state.d_params)  # D after the steps: not at its initialisation
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with cfjax and print the figures as JSON")
    args = parser.parse_args()
    if not args.check:
        parser.print_help()
        return
    print(json.dumps(check(), indent=2))


if __name__ == "__main__":
    main()
