"""`cfjax.restore(workdir)`: a trained run as plain, jitted functions of images, for notebooks.

    run = cfjax.restore("runs/cracks")               # newest checkpoint, parameters only, any devices
    x_hat = run.counterfactual(images, target=0)     # (B, H, W, 3): "what would it look like without cracks?"
    masks = run.mask(images)                         # (B, H, W) bool: the crack segmentation from labels alone
    run.classify(images), run.p_fake(images)         # D's decision and its uncertainty

Images are numpy or jax arrays, (B, H, W, 3) or one (H, W, 3), at the run's resolution. Their dtype says
how their values are read:

* float (float16/32/64, bfloat16): values in [0, 1], as they are;
* uint8: 8-bit pixels 0..255, divided by 255;
* bool and every other integer dtype are refused (a ValueError naming the dtype): a bool or int array is
  more likely a mask or a label map than a picture, and int16/int32/uint16 have no one scale;
* a uint8 array whose largest value is at most 1 is refused as ambiguous: it looks like a 0/1 mask,
  and read as 0..255 it would be an almost black image (divide by 255 yourself, or pass floats).

Every method returns numpy arrays. In a multi-process JAX program each process that calls `restore` gets
its own copy on its own devices, read alone: no call waits on another process (docs/multihost.md).
Each call is cut into chunks of `per_device_batch` images per device (the last one padded), so any
batch size compiles once and 1 or N devices give the same bits.
"""

import json
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from cfjax import kinds, parallel, tiling
from cfjax.config.upgrade import recorded_value
from cfjax.data import pipeline
from cfjax.evaluate import pad_batch
from cfjax.explain import outputs
from cfjax.masks import NORMAL_CLASS, thresholds
from cfjax.saved_runs import LoadedRun, load_run, saved_config

# Images each device computes per call (a call pads up to it): small enough for a laptop, and fixed,
# so that a run gives the same bits on any number of devices (XLA's kernels depend on the batch shape).
PER_DEVICE_BATCH = 8

# Tiles each device computes per call in `full_resolution` (a photo of any size is cut into many).
TILE_BATCH = 64


class RestoredRun:
    """A restored run. `config`, `step`, `kind` (`config.model`: "gan", "robust_gan", "classifier", "segmenter") and
    `params` describe it; `offers` lists the methods it supports; `class_names[i]` names label i (the
    training dataset's names, recorded in the checkpoint); `mask_rule` says how `mask()` binarises when given
    no threshold; `saliency_settings` holds the `config.saliency` values its maps depend on."""

    def __init__(self, run: LoadedRun, workdir: str, per_device_batch: int = PER_DEVICE_BATCH):
        if per_device_batch < 1:
            raise ValueError(f"per_device_batch must be at least 1; got {per_device_batch}")
        self.per_device_batch = per_device_batch
        self.tile_batch = TILE_BATCH
        self.config, self.step, self.kind, self.params = run.config, run.step, run.kind.name, run.params
        self.offers = run.kind.offers
        self.class_names = list(run.class_names or _unnamed_classes(run.config.num_classes))
        self.saliency_settings = run.kind.saliency_methods().saliency_settings(run.config)
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

    def saliency(self, images, target=NORMAL_CLASS) -> np.ndarray:
        """(B, H, W) in [0, 1]: the counterfactual map toward `target` (by default the normal class: where
        the damage is), as `config.saliency` defines it; a U-Net's crack probability."""
        return self._apply("saliency", images, target)

    def mask(self, images, threshold: float | None = None, target=NORMAL_CLASS) -> np.ndarray:
        """Binary masks (B, H, W): the saliency above `threshold`, by default `self.mask_threshold`
        (tuned on validation by `--mode=explain` at this step), or per-image Otsu when there is none."""
        self._require("mask")
        threshold = self.mask_threshold if threshold is None else float(threshold)
        if threshold is None:
            return self._apply("otsu_mask", images, target)
        return self.saliency(images, target) > threshold

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities (B, K): D's hybrid readout (softmax over its K class logits), a classifier's softmax."""
        return self._apply("probabilities", images)

    def generator_probabilities(self, images) -> np.ndarray:
        """Class probabilities (B, K) of G's classification head."""
        return self._apply("generator_probabilities", images)

    # --- one photo of any size --------------------------------------------------------------------

    def saliency_full(self, photo, target=NORMAL_CLASS) -> np.ndarray:
        """(H, W) map of one (H, W, 3) photo of any size (see `full_resolution`)."""
        return self.full_resolution(photo, ("saliency",), target)["saliency"]

    def counterfactual_full(self, photo, target=NORMAL_CLASS) -> np.ndarray:
        """(H, W, 3) counterfactual of one photo of any size toward `target` (see `full_resolution`)."""
        return self.full_resolution(photo, ("counterfactual",), target)["counterfactual"]

    def mask_full(self, photo, threshold: float | None = None, target=NORMAL_CLASS) -> np.ndarray:
        """(H, W) bool mask of one photo of any size: `saliency_full` above `threshold` (by default
        `self.mask_threshold`), else above the photo's own Otsu threshold."""
        self._require("mask")
        saliency = self.saliency_full(photo, target)
        threshold = self.mask_threshold if threshold is None else float(threshold)
        if threshold is None:
            return np.asarray(thresholds.otsu(jax.numpy.asarray(saliency)[None])[0])
        return saliency > threshold

    def full_resolution(self, photo, methods=("saliency",), target=NORMAL_CLASS, *, progress=None) -> dict:
        """{method: output} for one (H, W, 3) photo of any size, in one pass over it. A run trained on crops
        (patches, the embedded set: `pipeline.tiles_photos`) sees overlapping tiles of its training size
        blended by a Hann window (`cfjax.tiling`: no seams at tile borders); a run trained on whole images
        sees the photo resized to its size, and its maps are resized back. Maps and counterfactuals come
        back at (H, W); per-image outputs (`probabilities`, `p_fake`, `classify`...) one row per tile,
        (tiles, ...), with "tile_weight" (tiles,): the share of each tile's window on the photo."""
        for method in methods:
            self._require(method)
        batch = _as_unit_float(photo)
        if batch.ndim != 3 or batch.shape[-1] != 3:
            raise ValueError(f"photo must be one (H, W, 3) image; got shape {np.shape(photo)}")
        if not (np.isfinite(batch).all() and batch.min() >= 0.0 and batch.max() <= 1.0):
            raise ValueError("photo must be finite and in [0, 1] (divide 8-bit images by 255)")
        size = self.config.data.image_size
        tile = pipeline.tiles_photos(self.config)
        image = batch if tile else np.asarray(jax.image.resize(batch, (size, size, 3), method="bilinear"))
        layout = tiling.Layout.of(image.shape[:2], size, overlap=tile)
        target = int(self._targets(target, 1)[0])
        fn = self._tiled(tuple(methods), target)
        out = tiling.apply(fn, image, layout, batch_size=self._tile_batch(tile), progress=progress)
        if not tile:
            out = {name: np.asarray(jax.image.resize(value, batch.shape[:2] + value.shape[2:], method="bilinear"))
                   if value.shape[:2] == (size, size) else value for name, value in out.items()}
        out["tile_weight"] = layout.weights_inside()
        return out

    def _tile_batch(self, tile: bool) -> int:
        """Tiles per call: many for a tiled photo, one chunk of images for a resized one (a single tile)."""
        return (self.tile_batch if tile else self.per_device_batch) * self._mesh.devices.size

    def _tiled(self, methods: tuple, target: int) -> Callable:
        key = ("tiled", methods, target)
        if key not in self._jitted:
            functions = _inference_functions(self._run)

            def per_tile(params, tiles):
                targets = jax.numpy.full(tiles.shape[:1], target, jax.numpy.int32)
                return {method: functions[method](params, tiles, targets) for method in methods}

            self._jitted[key] = tiling.on_mesh(per_tile, self.params, self._mesh,
                                               self._tile_batch(pipeline.tiles_photos(self.config)))
        return self._jitted[key]

    # --- batching over the devices ----------------------------------------------------------------

    def _require(self, method: str) -> None:
        if method not in self.offers:
            needs = [name for name, kind in kinds.KINDS.items() if method in kind.offers]
            needs = " or ".join(needs) if len(needs) < 3 else f"{', '.join(needs[:-1])} or {needs[-1]}"
            raise ValueError(f"{method}() needs a {needs} run; {self.workdir} holds a {self.kind} run "
                             f"(config.model={self.kind!r}), which offers {', '.join(self.offers)}")

    def _apply(self, method: str, images, target=None) -> np.ndarray:
        self._require(method.removeprefix("otsu_"))
        batch, single = self._images(images)
        targets = self._targets(target, len(batch))
        result = np.concatenate([self._chunk(method, batch[start:start + count], targets[start:start + count])
                                 for start, count in self._chunks(len(batch))])
        return result[0] if single else result

    def _images(self, images) -> tuple[np.ndarray, bool]:
        batch = _as_unit_float(images)
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
        values = np.asarray(NORMAL_CLASS if target is None else target)
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




def _as_unit_float(images) -> np.ndarray:
    """float32 images in the unit interval by the rule of the module docstring, or a ValueError."""
    array = np.asarray(images)
    dtype = array.dtype
    if dtype == np.uint8:
        if array.size and array.max() <= 1:
            raise ValueError("images are uint8 with values only in {0, 1}: ambiguous, this looks like a 0/1 mask, "
                             "not 8-bit pixels (0..255); pass float images in [0, 1] (or uint8 images in 0..255)")
        return array.astype(np.float32) / 255.0
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer):
        raise ValueError(f"images of dtype {dtype} are refused: pass float images in [0, 1], or uint8 images "
                         "in 0..255 (bool and other integer arrays are masks or label maps, or have no one scale)")
    if not jax.numpy.issubdtype(dtype, jax.numpy.floating):
        raise ValueError(f"images of dtype {dtype} are refused: pass float images in [0, 1], or uint8 in 0..255")
    return array.astype(np.float32)


def _inference_functions(run: LoadedRun) -> dict[str, Callable]:
    """{method: fn(params, images, targets)} in inference mode (dropout off, statistics frozen); masks
    without a threshold are the saliency above each image's Otsu threshold ("otsu_mask")."""
    functions = run.kind.inference_functions()
    if "saliency" in functions:
        functions["otsu_mask"] = lambda params, x, t: thresholds.otsu(functions["saliency"](params, x, t))
    return functions


def _default_mask_threshold(run: LoadedRun, workdir: str) -> tuple[float | None, str]:
    """A kind's own fixed threshold (the U-Net's probability above 0.5); else the threshold a `--mode=explain`
    of this run tuned on its validation split for this very step and map (same `config.saliency`), from
    WORKDIR/explain or else any WORKDIR/explain_* (explains of a folder or of another dataset tune on the
    same validation split); else per-image Otsu."""
    if run.kind.mask_threshold is not None:
        return run.kind.mask_threshold, f"the {run.kind.name} run's map above {run.kind.mask_threshold}"
    if "mask" not in run.kind.offers:
        return None, f"none: a {run.kind.name} run draws no masks"
    unusable = None  # why the first record found cannot serve
    for name in outputs.in_workdir(workdir):
        path = os.path.join(workdir, name, "explain.json")
        tuned, reason = _tuned_threshold(run, path)
        if tuned is not None:
            return tuned, f"{tuned:.3g}, tuned on the validation split by --mode=explain ({path})"
        unusable = unusable or reason
    if unusable:
        return None, f"per-image Otsu ({unusable})"
    return None, "per-image Otsu (no tuned threshold: run --mode=explain to tune one on validation)"


def _tuned_threshold(run: LoadedRun, path: str) -> tuple[float | None, str | None]:
    """(τ, None) when the explain.json at `path` tuned one for this run's step and map; else (None, why not),
    the reason None where there is no usable record at all."""
    try:
        with open(path) as f:
            report = json.load(f)
        tuned = report["methods"][run.kind.saliency_methods().names[0]]["thresholdings"]["tuned"]["threshold"]
        settings, step = report["settings"], report["step"]
        # explain.json before cfjax 0.3 recorded the map's two settings on their own
        tuned_map = settings.get("saliency") or {"reduce": settings["saliency_reduce"],
                                                 "blur_radius": settings["blur_radius"]}
        same_map = all(recorded_value(tuned_map, "saliency", field) == run.config.saliency[field]
                       for field in ("reduce", "blur_radius", "views"))
    except (OSError, KeyError, TypeError, ValueError):
        return None, None
    if step != run.step:
        return None, f"{path} was tuned at step {step}, not {run.step}"
    if not same_map:
        return None, f"{path} was tuned on a different saliency map"
    return float(tuned), None


def _unnamed_classes(num_classes: int) -> list[str]:
    """Names for a run whose checkpoint records none (saved by an older cfjax): "0 (normal)", "1", ..."""
    return [f"{i} (normal)" if i == NORMAL_CLASS else str(i) for i in range(num_classes)]


def restore(workdir: str, step: int | None = None, config: ml_collections.ConfigDict | None = None, *,
            per_device_batch: int = PER_DEVICE_BATCH) -> RestoredRun:
    """Restore the newest (or the given) checkpoint of `workdir` for analysis: parameters only, replicated
    over the devices present. By default the run's own saved config is used; a `config` given instead
    must match it (else `CheckpointError` naming each differing field)."""
    if config is None:
        config = saved_config(workdir, step)  # upgraded: runs saved before today's fields existed
    return RestoredRun(load_run(config, workdir, step), workdir, per_device_batch)
