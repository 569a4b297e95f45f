"""`cfjax.restore(workdir)`: a trained run as plain, jitted functions of images, for notebooks.

    run = cfjax.restore("runs/cracks")               # newest checkpoint, parameters only, any devices
    x_hat = run.counterfactual(images, target=0)     # (B, H, W, 3): "what would it look like without cracks?"
    masks = run.mask(images)                         # (B, H, W) bool: the crack segmentation from labels alone
    run.classify(images), run.p_fake(images)         # D's decision and its uncertainty

Images are numpy or jax arrays in [0, 1], (B, H, W, 3) or one (H, W, 3), at the run's resolution.
Every method returns numpy arrays. One host (a notebook, a script); multi-host jobs use the evaluators. Each call is cut into chunks of `per_device_batch` images per device
(the last one padded), so any batch size compiles once and 1 or N devices give the same bits.
"""

import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cfjax import parallel, supervised
from cfjax.evaluate import pad_batch
from cfjax.explain import saliency, thresholds
from cfjax.models import p_fake, predict_class
from cfjax.saved_runs import LoadedRun, load_run, saved_config

# Images each device computes per call (a call pads up to it): small enough for a laptop, and fixed,
# so that a run gives the same bits on any number of devices (XLA's kernels depend on the batch shape).
PER_DEVICE_BATCH = 8

# What each kind of run can do; the other methods say which kind of run they need.
METHODS = {  # (a GAN's masks by per-image Otsu run as the internal "otsu_mask")
    "gan": ("classify", "p_fake", "generator_classify", "counterfactual", "saliency", "mask"),
    "classifier": ("classify",),
    "segmenter": ("saliency", "mask"),
}


class Analysis:
    """A restored run. `config`, `step`, `kind` ("gan", "classifier" or "segmenter") and `params`
    describe it; `mask_rule` says how `mask()` binarises when given no threshold."""

    def __init__(self, run: LoadedRun, workdir: str, per_device_batch: int = PER_DEVICE_BATCH):
        if per_device_batch < 1:
            raise ValueError(f"per_device_batch must be at least 1; got {per_device_batch}")
        self.per_device_batch = per_device_batch
        self.config, self.step, self.kind, self.params = run.config, run.step, run.kind, run.params
        self.workdir = workdir
        self._run = run
        self._mesh = run.mesh
        self._jitted: dict[str, Callable] = {}
        self.mask_threshold, self.mask_rule = _default_mask_threshold(run, workdir)

    def __repr__(self) -> str:
        return (f"<cfjax run {self.config.name!r} ({self.kind}) at step {self.step} from {self.workdir}, "
                f"on {self._mesh.devices.size} {jax.default_backend()} device(s)>")

    # --- the public methods -------------------------------------------------------------------------

    def classify(self, images) -> np.ndarray:
        """The predicted class (B,): D's hybrid readout for a GAN run, the argmax for a classifier."""
        return self._apply("classify", images)

    def p_fake(self, images) -> np.ndarray:
        """D's probability (B,) that each image is fake: high on inputs unlike the training data."""
        return self._apply("p_fake", images)

    def generator_classify(self, images) -> np.ndarray:
        """The class (B,) G's classification head (read from its encoder) predicts."""
        return self._apply("generator_classify", images)

    def counterfactual(self, images, target) -> np.ndarray:
        """G's counterfactual (B, H, W, 3) of each image as class `target` (an int, or one per image)."""
        return self._apply("counterfactual", images, target)

    def saliency(self, images, target=0) -> np.ndarray:
        """(B, H, W) in [0, 1]: what G changed toward `target` (0, "no damage": where the damage is),
        reduced over channels and blurred as the run's config says; a U-Net's crack probability."""
        return self._apply("saliency", images, target)

    def mask(self, images, threshold: float | None = None, target=0) -> np.ndarray:
        """Binary masks (B, H, W): the saliency above `threshold`, by default `self.mask_threshold`
        (tuned on validation by `--mode=explain` at this step), or per-image Otsu when there is none."""
        self._require("mask")
        threshold = self.mask_threshold if threshold is None else float(threshold)
        if threshold is None:
            return self._apply("otsu_mask", images, target)
        return self.saliency(images, target) > threshold

    # --- batching over the devices ----------------------------------------------------------------

    def _require(self, method: str) -> None:
        if method not in METHODS[self.kind]:
            needs = [kind for kind, methods in METHODS.items() if method in methods]
            raise ValueError(f"{method}() needs a {' or '.join(needs)} run; {self.workdir} holds a {self.kind} run "
                             f"(config.model={self.kind!r}), which offers {', '.join(METHODS[self.kind])}")

    def _apply(self, method: str, images, target=None) -> np.ndarray:
        self._require(method.removeprefix("otsu_"))
        batch, single = self._images(images)
        targets = self._targets(target, len(batch))
        result = np.concatenate([self._chunk(method, batch[start:start + count], targets[start:start + count])
                                 for start, count in self._chunks(len(batch))])
        return result[0] if single else result

    def _images(self, images) -> tuple[np.ndarray, bool]:
        batch = np.asarray(images, np.float32)
        single = batch.ndim == 3
        size = self.config.data.image_size
        batch = batch[None] if single else batch
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ValueError(f"images must be (B, {size}, {size}, 3) or ({size}, {size}, 3), the resolution this run "
                             f"was trained at (config.data.image_size={size}); got shape {np.shape(images)}")
        if not len(batch):
            raise ValueError("images is an empty batch")
        if not (np.isfinite(batch).all() and batch.min() >= 0.0 and batch.max() <= 1.0):
            raise ValueError(f"images must be finite and in [0, 1] (divide 8-bit images by 255); got values in "
                             f"[{np.nanmin(batch):.3g}, {np.nanmax(batch):.3g}]")
        return batch, single

    def _targets(self, target, count: int) -> np.ndarray:
        """One integer class per image: `target` is one int for all, or one per image."""
        values = np.asarray(0 if target is None else target)
        k = self.config.num_classes
        if values.ndim > 1 or (values.ndim == 1 and len(values) != count):
            raise ValueError(f"target must be one class or one per image ({count}); got shape {values.shape}")
        if not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() >= k:
            raise ValueError(f"target must be an integer class in 0..{k - 1} (config.num_classes={k}); got {target!r}")
        return np.broadcast_to(values.astype(np.int32), (count,))

    def _chunks(self, count: int):
        """(start, images) pairs, one fixed-size chunk per call: every device always computes the same
        shape, so outputs are identical on 1 or N devices and one compile serves any batch size."""
        size = self.per_device_batch * self._mesh.devices.size
        for start in range(0, count, size):
            yield start, min(size, count - start)

    def _chunk(self, method: str, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        size = self.per_device_batch * self._mesh.devices.size
        sharding = parallel.batch_sharding(self._mesh)
        padded = [jax.device_put(pad_batch(array, size), sharding) for array in (images, targets)]
        return np.asarray(self._compiled(method)(self.params, *padded))[:len(images)]

    def _compiled(self, method: str) -> Callable:
        if method not in self._jitted:
            fn = _inference_functions(self._run)[method]
            rep, batch = parallel.replicated(self._mesh), parallel.batch_sharding(self._mesh)
            self._jitted[method] = jax.jit(fn, in_shardings=(rep, batch, batch), out_shardings=batch)
        return self._jitted[method]




def _inference_functions(run: LoadedRun) -> dict[str, Callable]:
    """{method: fn(params, images, targets)} in inference mode (dropout off, statistics frozen)."""
    config, k = run.config, run.config.num_classes
    if run.kind == "gan":
        generator, discriminator = run.networks

        def d_logits(params, x):
            return discriminator.apply({"params": params[1]}, x, train=False)

        def g_outputs(params, x, targets):
            return generator.apply({"params": params[0]}, x, targets, train=False)

        def saliency_map(params, x, t):
            return saliency.counterfactual_map(x, g_outputs(params, x, t)[0], config)

        return {
            "classify": lambda params, x, t: predict_class(d_logits(params, x), k),
            "p_fake": lambda params, x, t: p_fake(d_logits(params, x)),
            "generator_classify": lambda params, x, t: jnp.argmax(g_outputs(params, x, t)[1], -1),
            "counterfactual": lambda params, x, t: g_outputs(params, x, t)[0],
            "saliency": saliency_map,
            "otsu_mask": lambda params, x, t: thresholds.otsu(saliency_map(params, x, t)),
        }
    model = run.networks
    if run.kind == "classifier":
        return {"classify": lambda params, x, t: jnp.argmax(supervised.apply_model(model, params, x), -1)}
    return {"saliency": lambda params, x, t: jax.nn.sigmoid(supervised.apply_model(model, params, x))}


def _default_mask_threshold(run: LoadedRun, workdir: str) -> tuple[float | None, str]:
    """A U-Net's masks are its probability above 0.5. A GAN's use the threshold `--mode=explain` tuned on
    validation when it was tuned on this very map (same reduction and blur), else per-image Otsu."""
    if run.kind == "segmenter":
        return 0.5, "the U-Net's crack probability above 0.5"
    if run.kind != "gan":
        return None, "none: a classifier run draws no masks"
    path = os.path.join(workdir, "explain", "explain.json")
    try:
        with open(path) as f:
            report = json.load(f)
        tuned = report["methods"]["counterfactual"]["thresholdings"]["tuned"]["threshold"]
        settings, step = report["settings"], report["step"]
        same_map = (settings.get("saliency_reduce") == run.config.saliency.reduce
                    and settings.get("blur_radius") == run.config.saliency.blur_radius)
    except (OSError, KeyError, TypeError, ValueError):
        return None, "per-image Otsu (no tuned threshold: run --mode=explain to tune one on validation)"
    if step != run.step:
        return None, f"per-image Otsu ({path} was tuned at step {step}, not {run.step})"
    if not same_map:
        return None, f"per-image Otsu ({path} was tuned on a different saliency map)"
    return float(tuned), f"{tuned:.3g}, tuned on the validation split by --mode=explain ({path})"


def restore(workdir: str, step: int | None = None, config: ml_collections.ConfigDict | None = None, *,
            per_device_batch: int = PER_DEVICE_BATCH) -> Analysis:
    """Restore the newest (or the given) checkpoint of `workdir` for analysis: parameters only, replicated
    over the devices present. By default the run's own saved config is used; a `config` given instead
    must match it (else `CheckpointError` naming each differing field)."""
    if config is None:
        config = saved_config(workdir, step)  # upgraded: runs saved before today's fields existed
    return Analysis(load_run(config, workdir, step), workdir, per_device_batch)
