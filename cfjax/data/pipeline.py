"""In-memory input pipeline: load the splits once, then batch `step` -> indices deterministically.

The batch of step s depends only on (seed, s), so a resumed run sees exactly the batches an
uninterrupted one would, with no iterator state to save.
"""

import ml_collections
import numpy as np

from cfjax import parallel
from cfjax.data import synthetic

DATASETS = ("synthetic",)
SPLIT_SIZE_FIELDS = {"train": "num_train", "validation": "num_validation", "test": "num_test"}


def load_splits(config: ml_collections.ConfigDict) -> dict:
    """{split: {"image", "mask", "label"}} as numpy arrays, for the dataset named in config.data.name."""
    data_cfg = config.data
    if data_cfg.name not in DATASETS:
        raise ValueError(f"config.data.name must be one of {DATASETS}, got {data_cfg.name!r}")
    return {
        split: synthetic.generate_split(
            split,
            data_cfg[field],
            seed=data_cfg.seed,
            image_size=data_cfg.image_size,
            num_classes=config.num_classes,
        )
        for split, field in SPLIT_SIZE_FIELDS.items()
    }


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the global batch at `step`: epoch-wise permutations, the remainder dropped."""
    steps_per_epoch = num_examples // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {num_examples} training examples")
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[position * batch_size:(position + 1) * batch_size]


def _transforms(rng: np.random.Generator, count: int):
    """Quarter turns (0-3) and horizontal flips (0/1), one of each per image."""
    return rng.integers(0, 4, count), rng.integers(0, 2, count)


def augment(images: np.ndarray, turns: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """One of the 8 flips/90-degree rotations per image: cracks and surfaces have no up."""
    out = np.empty_like(images)
    for i, (image, k, flip) in enumerate(zip(images, turns, flips)):
        image = np.rot90(image, k, axes=(0, 1))
        out[i] = image[:, ::-1] if flip else image
    return out


def train_batch(train: dict, step: int, batch_size: int, seed: int, *, augment_images: bool = True) -> dict:
    """This host's part of the global training batch of `step` (images and labels only).

    Augmentation draws from a generator seeded by (seed, step), so it too is a function of the step.
    """
    mine = parallel.host_slice(batch_size)
    rows = batch_indices(step, len(train["label"]), batch_size, seed)[mine]
    images = train["image"][rows]
    if augment_images:
        # Draw for the global batch, then keep this host's rows: the same run on any host count.
        turns, flips = _transforms(np.random.default_rng([seed, step, 1]), batch_size)
        images = augment(images, turns[mine], flips[mine])
    return {"image": images, "label": train["label"][rows]}
