"""Embedded procedural crack dataset (numpy + scipy only, no downloads).

Why this exists: cfjax needs a crack-segmentation benchmark that runs anywhere, is
deterministic, and carries exact pixel masks, so that the counterfactual saliency
|x - G(x)| can be scored by IoU (docs/design.md, section 2). A throwaway prototype showed
that naive synthetic cracks are solved by trivial filters (dark pixels, local
contrast), so this generator puts *distractors that are not cracks* into every class
with the same statistics:

* dark aggregate pebbles and dark stains / blobs (about as dark as cracks),
* straight construction joints (long, perfectly straight, uniform width),
* short faint scratches (dark or light),
* soft shadow edges and smooth lighting gradients.

Cracks are branching random walks of varying width and contrast, darkened
*multiplicatively* so that they are dark relative to their local background.
What separates a crack from a distractor is therefore its shape (thin, wiggly,
branching, long and continuous), not its darkness.

Every image is a pure function of ``(seed, split, index, image_size, num_classes)``.
Crack paths, joints, scratches, lighting and shadows are drawn in units of the image side
from resolution-independent random streams, so an index shows the same cracks and layout
at any resolution; texture (noise, aggregate, stains) comes from a resolution-dependent one.
Widths and feature sizes are quoted in px at 64 px and scaled with ``image_size``
(cracks never thinner than ~1 px).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.signal import lfilter

__all__ = [
    "CLASS_NAMES",
    "SPLITS",
    "class_names",
    "generate_example",
    "generate_split",
]

#: Class names per number of classes. Index 0 is always the crack-free class.
CLASS_NAMES: dict[int, tuple[str, ...]] = {
    2: ("no_crack", "crack"),
    3: ("no_crack", "longitudinal", "transverse"),
    4: ("no_crack", "longitudinal", "transverse", "network"),
}

SPLITS: tuple[str, ...] = ("train", "validation", "test")

_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
_STREAM_TAG = 0x0C4AC4  # keeps this generator's streams apart from other users of (seed, index)
_REF_SIZE = 64.0  # feature sizes below are quoted in pixels at 64 px and scaled from there
_MIN_CRACK_FRACTION = 0.012  # redraw cracks covering less than this share of the image
_MAX_CRACK_FRACTION = 0.10  # ... or more than this
_MAX_REDRAWS = 12
_EDGE_SHARPNESS = 2.0  # anti-aliasing ramp 0.5 px wide: little ambiguity at the mask edge


def class_names(num_classes: int) -> tuple[str, ...]:
    """Names of the classes for ``num_classes`` (label ``i`` is ``class_names(K)[i]``)."""
    _check_num_classes(num_classes)
    return CLASS_NAMES[num_classes]


# --------------------------------------------------------------------------- validation


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an int in {sorted(CLASS_NAMES)}, got {num_classes!r}")
    if int(num_classes) not in CLASS_NAMES:
        raise ValueError(f"num_classes must be one of {sorted(CLASS_NAMES)}, got {num_classes}")


def _check_args(split: str, seed: int, image_size: int, num_classes: int) -> None:
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    _check_num_classes(num_classes)


def _check_index(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


# --------------------------------------------------------------------------- noise helpers


def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells + 1) smoothstep interpolation weights from lattice to pixel centres."""
    coord = (np.arange(size) + 0.5) * (cells / size)
    i0 = np.minimum(coord.astype(np.int64), cells - 1)
    t = coord - i0
    t = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible lattice creases
    w = np.zeros((size, cells + 1))
    rows = np.arange(size)
    w[rows, i0] = 1.0 - t
    w[rows, i0 + 1] = t
    return w


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in about [-1, 1] with ``cells`` lattice cells per side.

    Separable interpolation written as two small matrix products (fast for any size).
    """
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    wy = _interp_matrix(size, cells)
    return wy @ grid @ wy.T


def _fractal(rng: np.random.Generator, size: int, base_cells: int, octaves: int, gain: float = 0.5) -> np.ndarray:
    """Multi-scale value noise (fBm), normalised to about [-1, 1]."""
    out = np.zeros((size, size))
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = min(base_cells * 2**o, max(2, size // 2))
        out += amp * _value_noise(rng, size, cells)
        total += amp
        amp *= gain
    return out / total


def _smooth1d(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """Smooth 1D noise with unit-ish std and correlation length ``corr`` samples."""
    x = rng.standard_normal(n + int(4 * corr) + 1)
    if corr > 0.5:
        # divide by the filter's theoretical std (not the sample std, which is ~0 for short x)
        x = ndimage.gaussian_filter1d(x, corr, mode="reflect") * np.sqrt(2.0 * np.sqrt(np.pi) * corr)
    return x[:n]


# --------------------------------------------------------------------------- rasterisation


def _stamp_max(out: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: np.ndarray, value: np.ndarray) -> None:
    """Max-splat anti-aliased discs (coverage 1 inside ``radius``, 1 px ramp) into ``out``.

    ``out`` has one plane per column of ``value``; plane k receives coverage * value[:, k].
    Used for crack polylines sampled densely enough that discs overlap.
    """
    size = out.shape[-1]
    reach = int(np.ceil(radius.max() + 1.0))
    off = np.arange(-reach, reach + 1)
    cy = np.floor(ys).astype(np.int64)[:, None, None] + off[None, :, None]
    cx = np.floor(xs).astype(np.int64)[:, None, None] + off[None, None, :]
    d = np.hypot(cy + 0.5 - ys[:, None, None], cx + 0.5 - xs[:, None, None])
    cov = np.clip((radius[:, None, None] - d) * _EDGE_SHARPNESS + 0.5, 0.0, 1.0)
    cy, cx = np.broadcast_arrays(cy, cx)
    keep = (cov > 0) & (cy >= 0) & (cy < size) & (cx >= 0) & (cx < size)
    flat = (cy * size + cx)[keep]
    covk = cov[keep]
    pidx = np.broadcast_to(np.arange(len(ys))[:, None, None], cov.shape)[keep]
    for k in range(out.shape[0]):
        np.maximum.at(out[k].reshape(-1), flat, covk * value[pidx, k])


def _line_distance(size: int, p: np.ndarray, angle: float) -> np.ndarray:
    """Unsigned distance (px) from every pixel centre to the infinite line through ``p``."""
    c = np.arange(size) + 0.5
    nx, ny = -np.sin(angle), np.cos(angle)
    return np.abs((c[None, :] - p[0]) * nx + (c[:, None] - p[1]) * ny)


def _segment_distance(size: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (px) from every pixel centre to the segment a-b (points as (x, y))."""
    c = np.arange(size) + 0.5
    px, py = c[None, :] - a[0], c[:, None] - a[1]
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(px - t * dx, py - t * dy)


# --------------------------------------------------------------------------- cracks


def _walk(rng, start, heading, length, step, wiggle, pull, target):
    """Random-walk polyline (normalised coords): smooth meander plus per-step zigzag.

    The heading's deviation from ``target`` is an AR(1) process: ``pull`` in [0, 1] draws
    it back (keeps longitudinal and transverse cracks on course); ``wiggle`` scales the
    jaggedness.
    """
    n = max(4, int(length / step))
    keep = 1.0 - 0.08 * pull
    innov = rng.normal(0.0, 0.06 * wiggle, n)
    innov[0] += np.angle(np.exp(1j * (heading - target)))  # initial deviation
    dev = lfilter([1.0], [1.0, -keep], innov)
    heading_t = target + dev + rng.normal(0.0, 0.45 * wiggle, n)  # zigzag along grain boundaries
    pts = np.cumsum(np.stack([np.cos(heading_t), np.sin(heading_t)], 1) * step, 0) + start
    return np.vstack([start[None], pts]), heading_t


def _crack_paths(rng: np.random.Generator, kind: str):
    """List of (points (n, 2) normalised x/y, radius scale (n,)) for one crack of ``kind``."""
    step = 1.0 / 160.0
    paths = []

    def trunk(start, heading, length, pull, target, rscale, wiggle=1.0, taper_start=False):
        pts, hd = _walk(rng, start, heading, length, step, wiggle, pull, target)
        n = len(pts)
        r = np.full(n, rscale)
        tip = min(n, int(rng.uniform(0.08, 0.25) * n) + 2)
        r[-tip:] *= np.linspace(1.0, 0.35, tip)  # cracks thin out at their tips
        if taper_start:
            r[:tip] *= np.linspace(0.35, 1.0, tip)
        paths.append((pts, r))
        return pts, hd, r

    def branches(pts, hd, r, count, depth):
        n = len(pts)
        for _ in range(count):
            j = int(rng.integers(n // 8, max(n // 8 + 1, 7 * n // 8)))
            side = rng.choice([-1.0, 1.0])
            h = hd[min(j, len(hd) - 1)] + side * rng.uniform(0.35, 1.1)
            length = rng.uniform(0.12, 0.4) * (0.6 if depth else 1.0)
            bp, bh, br = trunk(pts[j], h, length, 0.3, h, r[j] * rng.uniform(0.55, 0.85), 1.1)
            if depth == 0 and rng.random() < 0.35:
                branches(bp, bh, br, 1, 1)

    if kind in ("longitudinal", "transverse"):
        vertical = kind == "longitudinal"
        target = np.pi / 2 if vertical else 0.0
        if rng.random() < 0.5:
            target += np.pi  # up or left as often as down or right
        u = rng.uniform(0.15, 0.85)
        start = np.array([u, -0.04]) if vertical else np.array([-0.04, u])
        if target > np.pi * 0.75:  # starts on the opposite edge
            start = 1.0 - start
        heading = target + rng.normal(0.0, 0.25)
        length = rng.uniform(0.8, 1.3)
        pts, hd, r = trunk(start, heading, length, 0.6, target, rng.uniform(0.8, 1.2), taper_start=False)
        branches(pts, hd, r, int(rng.integers(0, 3)), 0)
    elif kind == "network":
        n_cracks = int(rng.integers(2, 4))
        for _ in range(n_cracks):
            start = rng.uniform(0.1, 0.9, 2)
            heading = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.35, 0.75)
            # grow both ways from an interior seed so the network sits inside the image
            for h in (heading, heading + np.pi):
                pts, hd, r = trunk(start, h + rng.normal(0, 0.2), length / 2, 0.1, h, rng.uniform(0.65, 0.95), 1.15)
                branches(pts, hd, r, int(rng.integers(0, 2)), 0)
    else:  # pragma: no cover - internal
        raise AssertionError(kind)
    return paths


def _render_crack(rng: np.random.Generator, kind: str, size: int, scale: float):
    """Crack coverage (H, W) in [0, 1] and darkening (H, W) in [0, 1)."""
    base_r = rng.uniform(0.8, 1.6) * scale  # radius in px: width 2r ~ 1.6 - 3.2 px at 64
    base_c = rng.uniform(0.3, 0.65)  # core darkening, visible to strong
    planes = np.zeros((2, size, size))
    for pts, rs in _crack_paths(rng, kind):
        n = len(pts)
        r = base_r * rs * np.exp(0.25 * _smooth1d(rng, n, 6.0))
        # at least ~1 px wide at any resolution, so small images keep continuous cracks
        r = np.clip(r, max(0.45 * scale, 0.5), max(1.6 * scale, 0.6))
        c = base_c * np.exp(0.25 * _smooth1d(rng, n, 10.0))
        c = np.clip(c, 0.2, 0.8)
        # densify so consecutive discs overlap even when the image is large
        seg = max(1, int(np.ceil(size / 160.0 / 0.5)))
        if seg > 1:
            t = np.linspace(0, n - 1, (n - 1) * seg + 1)
            pts = np.stack([np.interp(t, np.arange(n), pts[:, k]) for k in range(2)], 1)
            r = np.interp(t, np.arange(n), r)
            c = np.interp(t, np.arange(n), c)
        xs, ys = pts[:, 0] * size, pts[:, 1] * size
        inside = (xs > -4 * scale) & (xs < size + 4 * scale) & (ys > -4 * scale) & (ys < size + 4 * scale)
        if not inside.any():
            continue
        _stamp_max(planes, ys[inside], xs[inside], r[inside], np.stack([np.ones(inside.sum()), c[inside]], 1))
    return planes[0], planes[1]


# --------------------------------------------------------------------------- background


def _blobs(rng, size, scale, count, radius_px, sharp):
    """Field of soft blobs in [0, 1] (stains): blurred impulses, soft-thresholded."""
    field = np.zeros((size, size))
    if count <= 0:
        return field
    ys = rng.integers(0, size, count)
    xs = rng.integers(0, size, count)
    sig = max(0.5, radius_px * scale)
    np.add.at(field, (ys, xs), rng.uniform(0.6, 1.4, count) * 2 * np.pi * sig * sig)
    field = ndimage.gaussian_filter(field, sig, mode="wrap")
    return np.clip((field - 0.35) * sharp, 0.0, 1.0)


def _pebbles(rng, size, scale, count, r_lo, r_hi):
    """Coverage in [0, 1] of ``count`` aggregate stones, each a cluster of 1-3 discs.

    Clusters of overlapping anti-aliased discs give rounded but irregular outlines;
    radii ``r_lo .. r_hi`` are in px at 64 px.
    """
    out = np.zeros((1, size, size))
    if count <= 0:
        return out[0]
    parts = rng.integers(1, 4, count)
    centre = np.repeat(rng.uniform(0, size, (count, 2)), parts, 0)
    r = np.repeat(rng.uniform(r_lo, r_hi, count) * scale, parts)
    centre += rng.normal(0.0, 1.0, centre.shape) * r[:, None] * 0.6
    r *= rng.uniform(0.6, 1.0, len(r))
    _stamp_max(out, centre[:, 1], centre[:, 0], r, np.ones((len(r), 1)))
    return out[0]


def _surface(geo: np.random.Generator, tex: np.random.Generator, size: int, scale: float):
    """Crack-free surface as (grey albedo (H, W), RGB tint (3,))."""
    asphalt = geo.random() < 0.4
    base = geo.uniform(0.32, 0.48) if asphalt else geo.uniform(0.5, 0.72)
    grey = base * (1.0 + 0.12 * _fractal(tex, size, 3, 4)) + 0.035 * _fractal(tex, size, 12, 2)
    grain = tex.standard_normal((size, size))
    if scale > 1.5:
        grain = ndimage.gaussian_filter(grain, 0.4 * scale)
        grain /= grain.std() + 1e-8
    grey += (0.035 if asphalt else 0.025) * grain
    # aggregate of varied sizes and tones: light stones, mid stones, dark pebbles (distractors)
    area = (size / scale) ** 2 / 4096.0
    light = _pebbles(tex, size, scale, int(geo.integers(15, 60) * area), 0.4, 1.4)
    grey += light * geo.uniform(0.04, 0.16) * (1.3 if asphalt else 1.0)
    mid = _pebbles(tex, size, scale, int(geo.integers(10, 40) * area), 0.6, 2.0)
    grey *= 1.0 - mid * geo.uniform(0.04, 0.14)
    dark_pebbles = _pebbles(tex, size, scale, int(geo.integers(6, 24) * area), 0.5, 2.0)
    darkening = dark_pebbles * geo.uniform(0.35, 0.7)
    # dark stains: soft, a few px across, as dark as cracks
    stains = _blobs(tex, size, scale, int(geo.integers(0, 5) * area), geo.uniform(1.5, 3.5), 1.5)
    darkening = np.maximum(darkening, stains * geo.uniform(0.3, 0.65))
    # large faint stains (moisture, oil)
    big = _fractal(tex, size, 2, 3)
    darkening = np.maximum(darkening, np.clip((big - geo.uniform(0.1, 0.5)) * 3, 0, 1) * geo.uniform(0.0, 0.3))
    grey *= 1.0 - darkening
    tint = 1.0 + geo.normal(0.0, 0.035, 3)
    if asphalt:
        tint[2] += 0.02
    return grey, tint


def _line_distractors(geo: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Darkening (H, W) from construction joints and short scratches (same in every class)."""
    dark = np.zeros((size, size))
    n_joints = geo.choice([0, 1, 1, 2], p=[0.35, 0.3, 0.2, 0.15])
    for _ in range(n_joints):
        angle = geo.choice([0.0, np.pi / 2]) + geo.normal(0, 0.05) if geo.random() < 0.6 else geo.uniform(0, np.pi)
        p = geo.uniform(0.15, 0.85, 2) * size
        half_w = geo.uniform(0.5, 1.4) * scale  # uniform width along the whole joint
        d = _line_distance(size, p, angle)
        cov = np.clip(half_w - d + 0.5, 0, 1)
        dark = np.maximum(dark, cov * geo.uniform(0.35, 0.7))
    for _ in range(int(geo.integers(0, 5))):
        a = geo.uniform(0, 1, 2) * size
        ang = geo.uniform(0, 2 * np.pi)
        length = geo.uniform(4, 14) * scale
        b = a + length * np.array([np.cos(ang), np.sin(ang)])
        d = _segment_distance(size, a, b)
        cov = np.clip(geo.uniform(0.35, 0.8) * scale - d + 0.5, 0, 1)
        dark = np.maximum(dark, cov * geo.uniform(0.1, 0.3))
    return dark


def _illumination(geo: np.random.Generator, size: int) -> np.ndarray:
    """Multiplicative lighting (H, W): linear gradient, vignette and an optional soft shadow."""
    c = (np.arange(size) + 0.5) / size - 0.5
    xx, yy = c[None, :], c[:, None]
    ang = geo.uniform(0, 2 * np.pi)
    light = 1.0 + geo.uniform(0.0, 0.45) * (xx * np.cos(ang) + yy * np.sin(ang))
    light *= 1.0 - geo.uniform(0.0, 0.35) * (xx * xx + yy * yy)
    if geo.random() < 0.45:  # shadow cast by an object outside the view, slightly curved edge
        ang = geo.uniform(0, 2 * np.pi)
        s = xx * np.cos(ang) + yy * np.sin(ang) - geo.uniform(-0.3, 0.3)
        s = s + geo.uniform(-0.6, 0.6) * (xx * np.sin(ang) - yy * np.cos(ang)) ** 2
        soft = geo.uniform(0.005, 0.05)
        inside = 0.5 * (1 + np.tanh(s / soft))
        light *= 1.0 - geo.uniform(0.2, 0.45) * inside
    return light


# --------------------------------------------------------------------------- public API


def _crack_kind(label: int, num_classes: int, geo: np.random.Generator) -> str | None:
    if label == 0:
        return None
    if num_classes == 2:
        return str(geo.choice(["longitudinal", "transverse", "network"], p=[0.35, 0.35, 0.3]))
    return CLASS_NAMES[num_classes][label]


def generate_example(
    index: int, *, split: str = "train", seed: int = 0, image_size: int = 64, num_classes: int = 2
) -> dict:
    """One example ``{"image": (H, W, 3) float32 in [0, 1], "mask": (H, W) bool, "label": int}``.

    Deterministic from (seed, split, index, image_size, num_classes) and independent of any
    other index, so datasets can be generated in any order or in parallel. ``label`` is
    ``index % num_classes`` (balanced classes); label 0 has an all-False mask, every crack
    class a non-empty one. The mask is exactly the drawn crack (anti-aliased coverage > 0.5).
    """
    _check_args(split, seed, image_size, num_classes)
    _check_index("index", index)
    size, scale = int(image_size), image_size / _REF_SIZE
    label = int(index) % int(num_classes)
    ss = np.random.SeedSequence([_STREAM_TAG, int(seed), _SPLIT_IDS[split], int(index), int(num_classes)])
    geo_ss, tex_ss, crack_ss = ss.spawn(3)
    geo = np.random.default_rng(geo_ss)
    tex = np.random.default_rng([*tex_ss.generate_state(2), size])  # grain depends on the resolution
    crack_rng = np.random.default_rng(crack_ss)

    grey, tint = _surface(geo, tex, size, scale)
    grey *= 1.0 - _line_distractors(geo, size, scale)

    mask = np.zeros((size, size), dtype=bool)
    kind = _crack_kind(label, num_classes, geo)
    if kind is not None:
        cov = dark = None
        for _ in range(_MAX_REDRAWS):
            cov, dark = _render_crack(crack_rng, kind, size, scale)
            frac = float((cov > 0.5).mean())
            if _MIN_CRACK_FRACTION <= frac <= _MAX_CRACK_FRACTION:
                break
        mask = cov > 0.5
        if not mask.any():  # pragma: no cover - practically unreachable; guarantees non-empty
            mask[size // 2, :] = True
            dark = np.where(mask, 0.4, 0.0)
        grey = grey * (1.0 - dark)

    grey = grey * _illumination(geo, size)
    rgb = grey[..., None] * tint[None, None, :] + 0.01 * tex.standard_normal((size, size, 3))
    image = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    return {"image": image, "mask": mask, "label": label}


def generate_split(
    split: str,
    num_examples: int,
    *,
    seed: int = 0,
    image_size: int = 64,
    num_classes: int = 2,
    start_index: int = 0,
) -> dict:
    """Examples ``start_index .. start_index + num_examples - 1`` of a split, stacked.

    Returns ``{"image": (N, H, W, 3) float32, "mask": (N, H, W) bool, "label": (N,) int32}``.
    Chunks generated with different ``start_index`` concatenate to the same arrays as one call.
    """
    _check_args(split, seed, image_size, num_classes)
    _check_index("num_examples", num_examples)
    _check_index("start_index", start_index)
    n, size = int(num_examples), int(image_size)
    images = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size), bool)
    labels = np.empty((n,), np.int32)
    for i in range(n):
        ex = generate_example(
            start_index + i, split=split, seed=seed, image_size=size, num_classes=num_classes
        )
        images[i], masks[i], labels[i] = ex["image"], ex["mask"], ex["label"]
    return {"image": images, "mask": masks, "label": labels}
