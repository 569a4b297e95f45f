"""Full-resolution outputs of a function that only knows fixed-size tiles (a run trained on 64 px patches
explaining a 4000 px photo): overlapping tiles blended by a smooth window, so no tile border shows.

    layout = tiling.Layout.of(photo.shape[:2], size=64)          # stride size/2, reflection padding
    out = tiling.apply(fn, photo, layout, batch_size=256)        # fn: (B, size, size, 3) -> {name: array}
    out["saliency"]  # (H, W): spatial outputs blended;   out["logits"]  # (N, K+1): one row per tile

How. The photo is padded by reflection (`size/2` on every side, and to a whole number of strides), cut
into tiles every `size/2` pixels, and each tile's output is weighted by a 2-D raised-cosine (Hann) window
w(i, j) = sin²(π(i+½)/size) · sin²(π(j+½)/size) before it is summed into the photo; the sum is divided by
the summed weights. At stride size/2 the 1-D windows of neighbouring tiles add to exactly 1 (sin² + cos²),
so a constant tile output gives the same constant image, and an output that jumps from tile to tile (a
generator re-toning each tile, a map normalised per tile) fades across half a tile instead of stepping
at the border. `Layout.of(..., overlap=False)` is the old non-overlapping cut (uniform weights): each
pixel is seen by one tile, the cheapest, with seams.

`seam_measure(map, size)` says how visible a tile grid is: the mean absolute jump across the borders of
the non-overlapping `size` grid divided by the mean jump between neighbouring pixels inside tiles; 1.0
means no seam.

`on_mesh(fn, params, mesh, batch_size)` makes the per-tile callable: jitted once for a fixed batch of
tiles sharded over the device mesh (the last batch is padded), as `cfjax.restore` batches images.
Nothing here knows about runs, configs or the CLI.
"""

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from cfjax import parallel


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the tiles of one (H, W) photo lie. Tile n covers rows `ys[n // len(xs)]` + [0, size) and
    columns `xs[n % len(xs)]` + [0, size) of the photo padded by `pad` ((top, bottom), (left, right))."""

    shape: tuple
    size: int
    stride: int
    pad: tuple
    ys: tuple
    xs: tuple
    smooth: bool

    @classmethod
    def of(cls, shape, size: int, *, overlap: bool = True) -> "Layout":
        if size < 2 or (overlap and size % 2):
            raise ValueError(f"tile size must be at least 2 (and even to overlap by half); got {size}")
        stride = size // 2 if overlap else size
        before = size // 2 if overlap else 0
        pads, starts = [], []
        for length in shape[:2]:
            if length < 1:
                raise ValueError(f"cannot tile an image of shape {tuple(shape)}")
            count = max(1, -(-(length + 2 * before - size) // stride) + 1)
            total = (count - 1) * stride + size
            pads.append((before, total - length - before))
            starts.append(tuple(range(0, total - size + 1, stride)))
        return cls(tuple(shape[:2]), size, stride, tuple(pads), starts[0], starts[1], overlap)

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def window(self) -> np.ndarray:
        """(size, size) float32 weights: the Hann window, or ones for the non-overlapping cut."""
        if not self.smooth:
            return np.ones((self.size, self.size), np.float32)
        line = np.sin(np.pi * (np.arange(self.size) + 0.5) / self.size) ** 2
        return np.outer(line, line).astype(np.float32)

    def padded(self, image: np.ndarray) -> np.ndarray:
        """The image padded by reflection (by repetition where a side is 1 pixel)."""
        pad = self.pad + ((0, 0),) * (image.ndim - 2)
        return np.pad(image, pad, mode="reflect" if min(image.shape[:2]) > 1 else "edge")

    def tiles(self, padded: np.ndarray, indices) -> np.ndarray:
        """(len(indices), size, size, ...) tiles of the padded image."""
        s, cols = self.size, len(self.xs)
        return np.stack([padded[self.ys[n // cols]:self.ys[n // cols] + s, self.xs[n % cols]:self.xs[n % cols] + s]
                         for n in indices])

    def weights_inside(self) -> np.ndarray:
        """(count,) the window mass of each tile that falls on the photo itself (not its padding): how much
        each tile contributes, for averaging per-tile outputs (a tile mostly of padding counts little)."""
        inside = np.zeros([p[0] + n + p[1] for p, n in zip(self.pad, self.shape)], np.float32)
        inside[self.pad[0][0]:self.pad[0][0] + self.shape[0], self.pad[1][0]:self.pad[1][0] + self.shape[1]] = 1
        window = self.window()
        return np.array([(inside[y:y + self.size, x:x + self.size] * window).sum() for y in self.ys for x in self.xs],
                        np.float32)


class Blender:
    """Sums window-weighted tile outputs into the padded photo; `result()` divides by the weights and crops."""

    def __init__(self, layout: Layout, channels: tuple = ()):
        self.layout = layout
        rows, cols = (p[0] + n + p[1] for p, n in zip(layout.pad, layout.shape))
        self.total = np.zeros((rows, cols) + tuple(channels), np.float32)
        self.weight = np.zeros((rows, cols), np.float32)
        self.window = layout.window()

    def add(self, outputs: np.ndarray, indices) -> None:
        layout, s = self.layout, self.layout.size
        cols = len(layout.xs)
        window = self.window.reshape(self.window.shape + (1,) * (outputs.ndim - 3))
        for out, n in zip(outputs, indices):
            y, x = layout.ys[n // cols], layout.xs[n % cols]
            self.total[y:y + s, x:x + s] += window * out
            self.weight[y:y + s, x:x + s] += self.window

    def result(self) -> np.ndarray:
        (top, _), (left, _) = self.layout.pad
        height, width = self.layout.shape
        total = self.total[top:top + height, left:left + width]
        weight = self.weight[top:top + height, left:left + width]
        return total / np.maximum(weight, 1e-12).reshape(weight.shape + (1,) * (total.ndim - 2))


def apply(fn: Callable, image: np.ndarray, layout: Layout, *, batch_size: int,
          progress: Callable | None = None) -> dict:
    """{name: output} of `fn` over every tile of `image` (H, W, C), `batch_size` tiles per call (the last call
    padded with repeats, so `fn` always sees one shape). Outputs shaped (B, size, size, ...) are blended
    into (H, W, ...) photos; any other output comes back per tile, (count, ...), in row-major tile order.
    Memory holds one batch of tiles and the photo-sized sums, not every tile: a 3000 x 4000 photo is fine.
    `progress(tiles_done)` is called after each batch."""
    if image.shape[:2] != layout.shape:
        raise ValueError(f"image {image.shape[:2]} does not match the layout {layout.shape}")
    padded = layout.padded(np.asarray(image))
    blenders: dict[str, Blender] = {}
    per_tile: dict[str, list] = {}
    for start in range(0, layout.count, batch_size):
        indices = range(start, min(start + batch_size, layout.count))
        tiles = layout.tiles(padded, indices)
        if len(tiles) < batch_size:
            tiles = np.concatenate([tiles, np.repeat(tiles[-1:], batch_size - len(tiles), axis=0)])
        for name, out in fn(tiles).items():
            out = np.asarray(out)[:len(indices)]
            if out.ndim >= 3 and out.shape[1:3] == (layout.size, layout.size):
                if name not in blenders:
                    blenders[name] = Blender(layout, out.shape[3:])
                blenders[name].add(out, indices)
            else:
                per_tile.setdefault(name, []).append(out)
        if progress is not None:
            progress(indices.stop)
    results = {name: blender.result() for name, blender in blenders.items()}
    results.update({name: np.concatenate(parts) for name, parts in per_tile.items()})
    return results


def on_mesh(fn: Callable, params, mesh, batch_size: int) -> Callable:
    """A numpy callable `tiles -> {name: numpy}` of `fn(params, tiles)` (a dict of arrays), jitted for
    `batch_size` tiles sharded over `mesh`'s devices (batch_size must divide evenly over them)."""
    parallel.check_batch_size(batch_size, mesh, "the tile batch")
    rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    jitted = jax.jit(fn, in_shardings=(rep, batch), out_shardings=batch)

    def call(tiles: np.ndarray) -> dict:
        out = jitted(params, jax.device_put(np.asarray(tiles, np.float32), batch))
        return {name: np.asarray(value) for name, value in out.items()}

    return call


def seam_measure(image: np.ndarray, size: int) -> float:
    """How visible the non-overlapping `size` grid is in a (H, W) map or (H, W, C) image: the mean absolute
    jump between the pixels either side of a tile border (rows and columns), divided by the mean jump between
    neighbouring pixels inside tiles. 1.0: a border is like anywhere else; a grid of steps scores far above 1.
    nan when the image has no tile border or is constant inside its tiles."""
    values = np.asarray(image, np.float64)
    values = values.reshape(values.shape[:2] + (-1,))
    border, inside = [], []
    for axis in (0, 1):
        jumps = np.abs(np.diff(values, axis=axis)).mean(axis=-1)  # jump between pixel i-1 and i, at i = 1..n-1
        at = np.arange(1, values.shape[axis]) % size == 0
        border.append(np.compress(at, jumps, axis=axis).ravel())
        inside.append(np.compress(~at, jumps, axis=axis).ravel())
    border, inside = np.concatenate(border), np.concatenate(inside)
    if not border.size or not inside.size or inside.mean() == 0:
        return float("nan")
    return float(border.mean() / inside.mean())
