"""The local geometry of a decision at its test images: why one model is less robust than another.

A PGD table says *that* D breaks at a smaller budget than a classifier; this says *how*. For each image
the class margin m = z_y - max_{j != y} z_j and its input gradient g give, to first order, the smallest
perturbation that flips the decision (docs/robustness.md, "Why the plain GAN's D is less robust"):

* L2 distance  m / ||g||_2: how far the boundary is, in the geometry the network itself has;
* L-inf distance  m / ||g||_1: what an L-inf attacker needs; a linear model flips exactly there;
* density  ||g||_1 / (sqrt(n) ||g||_2) in (0, 1]: how evenly g spreads over the n input values.
  L-inf distance = L2 distance / (density sqrt(n)), so a model can be as far from its boundary in L2
  as another and still fall to a smaller L-inf budget, because its gradient is spread like noise over
  every pixel instead of gathered on the object (the "perceptually aligned" gradients of robust models);
* high-frequency share: the part of g's spectral power above half the Nyquist radius, i.e. how much of
  what the decision responds to is pixel-scale texture rather than shape;
* for D, the gradient of its fake log-odds (fake logit minus the logsumexp of the real ones): its L2
  norm (how steeply "is this generated?" changes: G's counterfactuals are small edits of real images),
  and its cosine with g: near +-1 when the class decision and "is this generated?" read the same directions;
* given a GAN's counterfactuals x-hat (from this run or another), how well g lines up with the edit
  x-hat - x, and whether this decision reads x-hat as the class G aimed at: a GAN's D that its own G flips
  far more often than an independent classifier does has its class boundary at features of G's making.

Everything is per image, computed under one jit over the mesh (`evaluate.SplitEvaluator`); `summarize`
turns it into medians and the first-order robust accuracy at given budgets.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from cfjax import evaluate
from cfjax.attacks import objectives
from cfjax.kinds import Readout

_TINY = 1e-12


def _high_frequency_share(gradient: jnp.ndarray) -> jnp.ndarray:
    """(B,) share of each gradient's spectral power (summed over channels) above half the Nyquist radius."""
    height, width = gradient.shape[1:3]
    power = jnp.sum(jnp.abs(jnp.fft.fft2(gradient, axes=(1, 2))) ** 2, axis=-1)
    fy, fx = jnp.meshgrid(jnp.fft.fftfreq(height), jnp.fft.fftfreq(width), indexing="ij")
    high = jnp.sqrt(fy ** 2 + fx ** 2) > 0.25  # Nyquist is 0.5 cycles per pixel
    return jnp.sum(power * high, axis=(1, 2)) / jnp.maximum(jnp.sum(power, axis=(1, 2)), _TINY)


def _cosine(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """(B,) cosine between the rows of two (B, n) arrays (0 where either is zero)."""
    norms = jnp.sqrt(jnp.sum(a ** 2, -1) * jnp.sum(b ** 2, -1))
    return jnp.sum(a * b, -1) / jnp.maximum(norms, _TINY)


def _per_image_geometry(params, batch, *, apply_fn, num_classes: int, has_detector: bool) -> dict:
    images, labels = batch["image"], batch["label"]

    def margins(x):
        return -objectives.untargeted_margin(apply_fn(params, x), labels, num_classes, joint=False)

    margin, pullback = jax.vjp(margins, images)
    gradient = pullback(jnp.ones_like(margin))[0]
    flat = gradient.reshape(len(images), -1)
    l1, l2 = jnp.sum(jnp.abs(flat), -1), jnp.sqrt(jnp.sum(flat ** 2, -1))
    out = {"margin": margin, "gradient_l1": l1, "gradient_l2": l2,
           "linf_distance": jnp.maximum(margin, 0.0) / jnp.maximum(l1, _TINY),
           "l2_distance": jnp.maximum(margin, 0.0) / jnp.maximum(l2, _TINY),
           "density": l1 / jnp.maximum(l2 * jnp.sqrt(flat.shape[-1]), _TINY),
           "high_frequency_share": _high_frequency_share(gradient)}
    if has_detector:
        fake_log_odds = lambda x: -jnp.sum(objectives.real_log_odds(apply_fn(params, x), num_classes))
        fake = jax.grad(fake_log_odds)(images).reshape(len(images), -1)
        out["fake_gradient_l2"] = jnp.sqrt(jnp.sum(fake ** 2, -1))
        out["cosine_with_fake"] = _cosine(flat, fake)
    if "counterfactual" in batch:
        edit = (batch["counterfactual"] - images).reshape(len(images), -1)
        out["edit_alignment"] = -_cosine(flat, edit)  # > 0: the edit lowers the true class's margin
        predicted = jnp.argmax(apply_fn(params, batch["counterfactual"])[..., :num_classes], -1)
        out["counterfactual_reaches_target"] = predicted == batch["target"]
    return out


def per_image(readout: Readout, data: dict, *, batch_size: int, mesh: Mesh) -> dict:
    """{field: (N,) array} of the module docstring's quantities for every image of `data` ("image", "label"),
    with "correct" (the clean decision is right, margin > 0). Where `data` also holds a "counterfactual" of
    each image toward a "target" class (a GAN's x-hat, from any run), also "edit_alignment" (minus the
    cosine between the margin's gradient and x-hat - x) and "counterfactual_reaches_target" (this decision
    reads x-hat as the target class)."""
    batch_fn = functools.partial(_per_image_geometry, apply_fn=readout.apply_fn, num_classes=readout.num_classes,
                                 has_detector=readout.has_detector)
    fields = ("image", "label", "counterfactual", "target") if "counterfactual" in data else ("image", "label")
    evaluator = evaluate.SplitEvaluator(data, batch_fn, batch_size=batch_size, mesh=mesh, fields=fields)
    out = evaluator.run(readout.params)
    out.pop("has_mask")
    out["correct"] = out["margin"] > 0
    return out


def summarize(geometry: dict, epsilons_255: tuple[float, ...]) -> dict:
    """Medians over the correctly classified images (the ones an attack can break), and the first-order
    robust accuracy at each L-inf budget (in 1/255, keyed as written): the share of all images that are
    right and whose L-inf distance is at least the budget (exact for a linear model; a real network can
    break earlier, where it curves toward the boundary, or later, where it curves away)."""
    right = geometry["correct"]
    flags = ("correct", "counterfactual_reaches_target")
    fields = [name for name in geometry if name not in flags]
    medians = {name: float(np.median(geometry[name][right])) if right.any() else None for name in fields}
    first_order = {f"{epsilon:g}": float(np.mean(right & (geometry["linf_distance"] >= epsilon / 255)))
                   for epsilon in epsilons_255}
    summary = {"num_images": int(len(right)), "accuracy": float(right.mean()), "median_of_correct": medians,
               "first_order_accuracy": first_order}
    if "counterfactual_reaches_target" in geometry:  # over every image, as a GAN's flip rate is
        summary["counterfactual_flip_rate"] = float(np.mean(geometry["counterfactual_reaches_target"]))
    return summary
