"""The input pipeline: grain over a random-access source, batches placed on the device mesh.

The training data is a grain `MapDataset` indexed by step: shuffled once per epoch with an explicit
seed, augmented per example with randomness seeded by (seed, position), batched, and each global
batch split into contiguous parts between hosts. So batch s is a function of the seed and s alone, on
any number of hosts, and the iterator position saved with each checkpoint is all a resumed run needs
to see the same data.
Worker threads prepare batches ahead and the next batch is already on the devices while the
current step runs.
"""

import collections
import functools

import grain
import jax
import ml_collections
import numpy as np

from cfjax import parallel
from cfjax.data import sources, transforms
from cfjax.errors import DataError


def _training_example(example: dict, rng: np.random.Generator, *, size: int, fit_mode: str, augment: bool,
                      jitter: float, with_masks: bool = False) -> dict:
    kept = ("image", "label", "mask") if with_masks else ("image", "label")
    example = transforms.fit({name: example[name] for name in kept}, size, fit_mode, rng)
    if augment:
        example = transforms.flip_rotate(example, rng)
    image = transforms.to_float(example["image"])
    if jitter > 0:
        image = transforms.colour_jitter(image, jitter, rng)
    out = {"image": image, "label": np.int32(example["label"])}
    if with_masks:
        out["mask"] = np.asarray(example["mask"], bool)
    return out


def _evaluation_example(example: dict, *, size: int, fit_mode: str) -> dict:
    example = transforms.fit(example, size, fit_mode)
    return {
        "image": transforms.to_float(example["image"]),
        "label": np.int32(example["label"]),
        "mask": np.asarray(example["mask"], bool),
        "has_mask": np.bool_(example["has_mask"]),
    }


def training_dataset(source: sources.SplitSource, config: ml_collections.ConfigDict, *, with_masks: bool = False
                     ) -> grain.MapDataset:
    """This host's batches; element s is its contiguous part of global batch s (examples s*B ... s*B+B-1).
    `with_masks` keeps the masks (the supervised segmentation baseline trains on them)."""
    data = config.data
    if len(source) < config.batch_size:
        raise DataError(f"the training split of {data.name} has {len(source)} examples, fewer than "
                        f"config.batch_size={config.batch_size}")
    seed = data.seed + config.seed
    transform = functools.partial(_training_example, size=data.image_size, fit_mode=data.fit,
                                  augment=data.augment, jitter=data.colour_jitter, with_masks=with_masks)
    dataset = grain.MapDataset.source(source.examples)
    if data.balance_classes:
        indices = balanced_indices(source.examples.labels(), config.num_classes, source.class_names, seed)
        dataset = grain.MapDataset.source(indices).map(source.examples.__getitem__)
    dataset = dataset.shuffle(seed=seed).repeat()
    dataset = dataset.random_map(transform, seed=seed)
    # Host h of H takes rows h*B/H ... (h+1)*B/H - 1 of each global batch: chunks of B/H examples, every H-th.
    # So the global array the hosts assemble holds batch s's examples in the order of a single process, and
    # each device gets the same rows however the devices are spread over processes (bit-identical runs).
    hosts = jax.process_count()
    dataset = dataset.batch(config.batch_size // hosts, drop_remainder=True)
    return dataset[jax.process_index()::hosts]


def balanced_indices(labels: np.ndarray, num_classes: int, class_names: tuple = (), seed: int = 0) -> np.ndarray:
    """An epoch's example indices with every class as often as the largest one (smaller classes
    repeated in full, then a seeded part of them), so D and G see each class equally often."""
    by_class = [np.flatnonzero(labels == k) for k in range(num_classes)]
    empty = [k for k, rows in enumerate(by_class) if not len(rows)]
    if empty:
        name = f" ({class_names[empty[0]]})" if len(class_names) > empty[0] else ""
        raise DataError(f"class {empty[0]}{name} has no training examples; the GAN needs every class "
                        "(full crack photos all hold cracks: train on the patch view)")
    largest = max(len(rows) for rows in by_class)
    if all(len(rows) == largest for rows in by_class):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    parts = []
    for rows in by_class:
        repeats, extra = divmod(largest, len(rows))
        parts.append(np.concatenate([np.tile(rows, repeats), rng.choice(rows, extra, replace=False)]))
    return np.concatenate(parts)


class TrainBatches:
    """Iterator of sharded training batches, one step ahead on the devices, with a saveable position.

    The position is `{"next_batch": n, "grain": <grain iterator state>, "dataset": fingerprint}`;
    restoring a position saved over another dataset (a rebuilt or different split) is refused.
    """

    def __init__(self, dataset: grain.MapDataset, mesh, *, fingerprint: dict, num_threads: int = 2,
                 prefetch: int = 4, device_prefetch: int = 1):
        options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        self._iterator = iter(dataset.to_iter_dataset(options))
        self._mesh = mesh
        self._fingerprint = fingerprint
        self._device_prefetch = device_prefetch
        self._next_batch = 0  # index of the batch the caller receives next
        self._ahead = collections.deque()  # (grain state before the batch, batch on devices)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        while len(self._ahead) <= self._device_prefetch:
            position = self._iterator.get_state()
            self._ahead.append((position, parallel.shard_batch(next(self._iterator), self._mesh)))
        self._next_batch += 1
        return self._ahead.popleft()[1]

    def get_state(self) -> dict:
        """The position of the next batch the caller will receive (batches on devices not counted)."""
        grain_state = self._ahead[0][0] if self._ahead else self._iterator.get_state()
        return {"next_batch": self._next_batch, "grain": grain_state, "dataset": self._fingerprint}

    def set_state(self, state: dict) -> None:
        if state.get("dataset") != self._fingerprint:
            raise DataError(f"the saved input position was over dataset {state.get('dataset')}, but this run "
                            f"reads {self._fingerprint} (was the dataset rebuilt or the config changed?)")
        self._ahead.clear()
        self._iterator.set_state(state["grain"])
        self._next_batch = int(state["next_batch"])

    def next_index(self) -> int:
        """The step whose batch comes next (for checking a restored position against the step)."""
        return self._next_batch

    def close(self) -> None:
        """Stop grain's worker threads and drop the batches held ahead."""
        self._ahead.clear()
        self._iterator.close()


def training_source(config: ml_collections.ConfigDict) -> sources.SplitSource:
    """The training split (for the embedded set, `config.data.num_train` generated examples)."""
    return sources.open_split(config, "train")


def train_batches(source: sources.SplitSource, config: ml_collections.ConfigDict, mesh, *, with_masks: bool = False
                  ) -> TrainBatches:
    fingerprint = {"name": config.data.name, "view": config.data.view,
                   "examples": len(source), "classes": list(source.class_names)}
    return TrainBatches(training_dataset(source, config, with_masks=with_masks), mesh, fingerprint=fingerprint,
                        num_threads=config.data.num_workers, prefetch=config.data.prefetch)


def tiles_photos(config: ml_collections.ConfigDict) -> bool:
    """Whether a run sees a photo larger than its training size tile by tile (runs trained on crops of
    photographs: patch views and the embedded set) or resized (runs trained on whole resized images)."""
    names = sources.pooled_names(config.data.name)
    return names == ["synthetic"] or (all(n.startswith("crack_segmentation") for n in names)
                                      and config.data.view == "patches")


def evaluation_arrays(config: ml_collections.ConfigDict, split: str) -> dict:
    """A validation or test split as arrays at the training resolution (no augmentation)."""
    data = config.data
    source = sources.open_split(config, split)
    transform = functools.partial(_evaluation_example, size=data.image_size, fit_mode=data.fit)
    return sources.as_arrays(source, transform)
