"""The local geometry of a decision at its test images: why one model is less robust than another.

A PGD table says *that* D breaks at a smaller budget than a classifier; this says *how*. For an image of
class y and each wrong class j, the margin m_j = z_y - z_j and its input gradient g_j give, to first order,
the smallest perturbation that makes j win (DeepFool's linearisation; docs/robustness.md, "Why the plain
GAN's D is less robust"). Per image, over the wrong classes:

* L2 distance  min_j m_j / ||g_j||_2: how far the boundary is, in the geometry the network itself has;
* L-inf distance  min_j m_j / ||g_j||_1: what an L-inf attacker needs (a linear model flips exactly
  there, while the step stays inside [0, 1]). Its class j* is "the nearest class"; the rest is read there;
* margin m = m_{j*} and its gradient g = g_{j*};
* density  ||g||_1 / (sqrt(n) ||g||_2) in [1/sqrt(n), 1]: how evenly g spreads over the n input values.
  L-inf distance = L2 distance / (density sqrt(n)) (for two classes), so a model can be as far from its
  boundary in L2 as another and still fall to a smaller L-inf budget, because its gradient is spread like
  noise over every pixel instead of gathered on the object;
* high-frequency share: the part of g's spectral power (summed over channels, no window) above half
  the Nyquist radius: how much of what the decision responds to is pixel-scale texture rather than
  shape. White noise scores about 0.80 (the corners of the frequency square lie outside the circle);
* for D, the gradient of its fake log-odds (fake logit minus the logsumexp of the real ones): its L2
  norm (how steeply "is this generated?" changes), and its cosine with g: > 0 where raising the true
  class's margin makes D take the image for generated, < 0 where lowering it does (an attack then also
  raises p_fake). Part of a negative cosine is by construction: the log-odds subtracts the real logits.
  Without that part: the cosine of g with the gradient of the fake logit against the mean of the true and
  the nearest class's logits, a contrast orthogonal to the margin's in logit space (and, like it, blind to
  a shift of all logits), so what is left of it is input directions the class and fake readouts share;
  its absolute value is the overlap (its sign differs between classes, so a median of it says little);
* given a GAN's counterfactuals x-hat toward a target class t (from this run or another), how well
  -grad(z_y - z_t) lines up with the edit x-hat - x, and whether this decision reads x-hat as t: a D that
  its own G flips far more often than an independent classifier does has its boundary at G's features;
  and how far along the straight path from x to x-hat the decision first changes (as a fraction of the
  path, and in L2): the boundary's distance in the direction a class change actually takes, beside the
  worst-case distance above. A decision can be far from its boundary along G's edits and near it off them;
* given another decision's margin gradient at the same images (`margin_gradients`), the cosine of the two:
  whether two models are fragile in the same directions (first order, in L2). With K > 2 each model's
  margin is over its own nearest class, so a low cosine can also mean another class.

Where a gradient is exactly zero (a flat or saturated decision: the usual sign of gradient masking) the
distances are inf and density and high-frequency share NaN, and `summarize` counts such images.
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
    return jnp.sum(power * high, axis=(1, 2)) / jnp.sum(power, axis=(1, 2))


def _cosine(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """(B,) cosine between the rows of two (B, n) arrays (0 where either is zero)."""
    norms = jnp.sqrt(jnp.sum(a ** 2, -1) * jnp.sum(b ** 2, -1))
    return jnp.sum(a * b, -1) / jnp.maximum(norms, _TINY)


def _margins_and_gradients(apply_fn, params, images, labels, num_classes: int):
    """(B, K) margins z_y - z_j and their input gradients (K, B, ...), from one forward pass."""
    def margins(x):
        logits = apply_fn(params, x)[..., :num_classes]
        return jnp.take_along_axis(logits, labels[:, None], axis=-1) - logits

    margin, pullback = jax.vjp(margins, images)
    gradients = jax.vmap(lambda onehot: pullback(jnp.broadcast_to(onehot, margin.shape))[0])(jnp.eye(num_classes))
    return margin, gradients


def _first_flip_along(apply_fn, params, images, labels, edits, num_classes: int, *, steps: int = 16,
                      refinements: int = 8) -> jnp.ndarray:
    """(B,) where on x + t * edit, t in [0, 1], the decision first leaves the label, as the grid sees it: the
    first of `steps` grid points that is no longer read as the label, refined by bisection inside the grid
    cell before it (a change that starts and ends between two grid points is missed); 0 where x itself is
    misread, inf where no grid point is. t is float32 whatever the images' dtype."""
    def flipped(t):  # t (B,)
        moved = images + (t.reshape((-1,) + (1,) * (images.ndim - 1)) * edits).astype(images.dtype)
        return jnp.argmax(apply_fn(params, moved)[..., :num_classes], -1) != labels

    grid = jnp.arange(1, steps + 1, dtype=jnp.float32) / steps
    flips = jax.lax.map(lambda t: flipped(jnp.full(labels.shape, t)), grid)  # (steps, B)
    high = grid[jnp.argmax(flips, 0)]

    def bisect(_, bounds):
        low, high = bounds
        middle = (low + high) / 2
        changed = flipped(middle)
        return jnp.where(changed, low, middle), jnp.where(changed, middle, high)

    _, high = jax.lax.fori_loop(0, refinements, bisect, (high - 1 / steps, high))
    misread = flipped(jnp.zeros(labels.shape, jnp.float32))
    return jnp.where(misread, 0.0, jnp.where(flips.any(0), high, jnp.inf))


def _per_image_geometry(params, batch, *, apply_fn, num_classes: int, has_detector: bool,
                        keep_gradient: bool = False) -> dict:
    images, labels = batch["image"], batch["label"]
    count = len(images)
    margins, gradients = _margins_and_gradients(apply_fn, params, images, labels, num_classes)
    flat = jnp.moveaxis(gradients.reshape(num_classes, count, -1), 0, 1)  # (B, K, n)
    l1, l2 = jnp.sum(jnp.abs(flat), -1), jnp.sqrt(jnp.sum(flat ** 2, -1))  # (B, K)
    wrong = ~jax.nn.one_hot(labels, num_classes, dtype=bool)

    def distance(norm):  # min over wrong classes; 0 once misclassified, inf along a zero gradient
        per_class = jnp.where(norm > 0, jnp.maximum(margins, 0.0) / jnp.where(norm > 0, norm, 1.0), jnp.inf)
        return jnp.where(wrong, per_class, jnp.inf)

    linf, l2_distance = distance(l1), distance(l2)
    nearest = jnp.argmin(linf, -1)
    take = lambda values: jnp.take_along_axis(values, nearest[:, None], -1)[:, 0]
    g = jnp.take_along_axis(flat, nearest[:, None, None], 1)[:, 0]
    g_l1, g_l2 = take(l1), take(l2)
    flat_gradient = g_l2 == 0
    out = {"correct": jnp.min(jnp.where(wrong, margins, jnp.inf), -1) > 0,
           "margin": take(margins), "gradient_l1": g_l1, "gradient_l2": g_l2,
           "linf_distance": jnp.min(linf, -1), "l2_distance": jnp.min(l2_distance, -1),
           "density": jnp.where(flat_gradient, jnp.nan, g_l1 / jnp.maximum(g_l2 * jnp.sqrt(flat.shape[-1]), _TINY)),
           "high_frequency_share": jnp.where(flat_gradient, jnp.nan,
                                             _high_frequency_share(g.reshape(images.shape)))}
    if has_detector:
        fake_log_odds = lambda x: -jnp.sum(objectives.real_log_odds(apply_fn(params, x), num_classes))
        fake = jax.grad(fake_log_odds)(images).reshape(count, -1)
        out["fake_gradient_l2"] = jnp.sqrt(jnp.sum(fake ** 2, -1))
        out["cosine_with_fake"] = _cosine(g, fake)

        def fake_contrast(x):  # the fake logit against the mean of the true and the nearest class's
            logits = apply_fn(params, x)
            pair = jnp.take_along_axis(logits, jnp.stack([labels, nearest], -1), -1)
            return jnp.sum(logits[..., num_classes] - jnp.mean(pair, -1))

        out["cosine_with_fake_contrast"] = _cosine(g, jax.grad(fake_contrast)(images).reshape(count, -1))
        out["overlap_with_fake_contrast"] = jnp.abs(out["cosine_with_fake_contrast"])  # its sign varies by class
    if keep_gradient:
        out["gradient"] = g
    if "reference_gradient" in batch:
        out["cosine_with_reference"] = _cosine(g, batch["reference_gradient"].reshape(count, -1))
    if "counterfactual" in batch:
        targets = batch["target"]
        toward = jnp.take_along_axis(flat, targets[:, None, None], 1)[:, 0]  # grad(z_y - z_t)
        edit = (batch["counterfactual"] - images).reshape(count, -1)
        out["edit_alignment"] = jnp.where(targets == labels, jnp.nan, -_cosine(toward, edit))
        predicted = jnp.argmax(apply_fn(params, batch["counterfactual"])[..., :num_classes], -1)
        out["counterfactual_reaches_target"] = predicted == targets
        fraction = _first_flip_along(apply_fn, params, images, labels, edit.reshape(images.shape), num_classes)
        out["edit_flip_fraction"] = fraction
        out["edit_flip_l2"] = fraction * jnp.sqrt(jnp.sum(edit ** 2, -1))
        out["edit_flip_over_l2_distance"] = out["edit_flip_l2"] / jnp.maximum(jnp.min(l2_distance, -1), _TINY)
    return out


def per_image(readout: Readout, data: dict, *, batch_size: int, mesh: Mesh, keep_gradient: bool = False) -> dict:
    """{field: (N,) array} of the module docstring's quantities for every image of `data` ("image", "label"),
    with "correct" (the clean decision is right). Where `data` also holds a "counterfactual" of each image
    toward a "target" class (a GAN's x-hat, from any run), also "edit_alignment",
    "counterfactual_reaches_target" (this decision reads x-hat as the target class), "edit_flip_fraction"
    (where on the path x -> x-hat the decision first changes, as a 16-point grid refined by bisection sees it;
    inf where no grid point changes it), "edit_flip_l2" (that point's L2 distance from x) and
    "edit_flip_over_l2_distance" (over the first-order L2 distance). Where it holds another decision's
    "reference_gradient" (`margin_gradients`), also "cosine_with_reference". With `keep_gradient`, also
    "gradient": each image's margin gradient g, shaped as the images (pop it before `summarize`)."""
    if "counterfactual" in data and "target" not in data:
        raise ValueError("data with a 'counterfactual' per image needs its 'target' class too")
    batch_fn = functools.partial(_per_image_geometry, apply_fn=readout.apply_fn, num_classes=readout.num_classes,
                                 has_detector=readout.has_detector, keep_gradient=keep_gradient)
    fields = ("image", "label")
    fields += ("counterfactual", "target") if "counterfactual" in data else ()
    fields += ("reference_gradient",) if "reference_gradient" in data else ()
    evaluator = evaluate.SplitEvaluator(data, batch_fn, batch_size=batch_size, mesh=mesh, fields=fields)
    out = evaluator.run(readout.params)
    out.pop("has_mask")
    if keep_gradient:
        out["gradient"] = out["gradient"].reshape(np.shape(data["image"]))
    return out


def margin_gradients(readout: Readout, data: dict, *, batch_size: int, mesh: Mesh) -> np.ndarray:
    """(N, ...) the input gradient of each image's margin over its nearest wrong class: a reference for
    `per_image` (as data["reference_gradient"]) to compare other decisions' fragile directions with."""
    plain = {name: data[name] for name in ("image", "label")}
    return per_image(readout, plain, batch_size=batch_size, mesh=mesh, keep_gradient=True)["gradient"]


def summarize(geometry: dict, epsilons_255: tuple[float, ...]) -> dict:
    """Medians over the correctly classified images (the ones an attack can break; NaNs of flat gradients
    left out), the share of those with a flat gradient, and the first-order robust accuracy at each L-inf
    budget (in 1/255, keyed as written): the share of all images that are right and whose L-inf distance is
    at least the budget (exact for a linear model; a real network can break earlier, where it curves toward
    the boundary, or later, where it curves away)."""
    right = geometry["correct"]
    flags = ("correct", "counterfactual_reaches_target")
    fields = [name for name in geometry if name not in flags]
    medians = {name: float(np.nanmedian(geometry[name][right]))
               if right.any() and not np.isnan(geometry[name][right]).all() else None for name in fields}
    first_order = {f"{epsilon:g}": float(np.mean(right & (geometry["linf_distance"] >= epsilon / 255)))
                   for epsilon in epsilons_255}
    summary = {"num_images": int(len(right)), "accuracy": float(right.mean()), "median_of_correct": medians,
               "flat_gradient_share": float(np.mean(geometry["gradient_l2"][right] == 0)) if right.any() else None,
               "first_order_accuracy": first_order}
    if "counterfactual_reaches_target" in geometry:  # over every image, as a GAN's flip rate is
        summary["counterfactual_flip_rate"] = float(np.mean(geometry["counterfactual_reaches_target"]))
        # The median of edit_flip_l2 counts these as beyond the edit (inf): how many there are.
        summary["edit_never_flips_share"] = (float(np.mean(np.isinf(geometry["edit_flip_fraction"][right])))
                                             if right.any() else None)
    return summary
