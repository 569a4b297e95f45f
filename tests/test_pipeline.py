"""The grain input pipeline: transforms, class balance, determinism, saved positions, host splits,
and real crack patches read back into training batches and evaluation arrays."""

import jax
import numpy as np
import pytest
from conftest import shared_dataset
from data_helpers import copy_pairs, prepare

from cfjax import parallel
from cfjax.data import pipeline, sources, transforms
from cfjax.errors import DataError


def test_flip_rotate_moves_the_mask_with_the_image():
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 3)).astype(np.float32)
    mask = image[..., 0] > 0.5
    seen = set()
    for seed in range(40):
        out = transforms.flip_rotate({"image": image, "mask": mask}, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["mask"], out["image"][..., 0] > 0.5)
        seen.add(out["image"].tobytes())
    assert len(seen) == 8  # all of the square's symmetries occur


def test_fit_resizes_or_crops_to_the_training_size():
    image = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 20:40] = True
    resized = transforms.fit({"image": image, "mask": mask}, 16, "resize")
    assert resized["image"].shape == (16, 16, 3) and resized["mask"].shape == (16, 16)
    cropped = transforms.fit({"image": image, "mask": mask}, 32, "crop")  # centred without a generator
    np.testing.assert_array_equal(cropped["image"], image[4:36, 14:46])
    np.testing.assert_array_equal(cropped["mask"], mask[4:36, 14:46])


def test_mask_downscale_keeps_every_pixel_a_crack_touches():
    mask = np.zeros((16, 16), bool)
    mask[5, :] = True  # a 1 px crack, 8x smaller: one row of the 2x2 mask, not nothing
    out = transforms.fit({"image": np.zeros((16, 16, 3), np.uint8), "mask": mask}, 2, "resize")["mask"]
    np.testing.assert_array_equal(out, [[True, True], [False, False]])


def test_colour_jitter_stays_in_range_and_zero_strength_is_identity():
    image = np.random.default_rng(1).random((6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(transforms.colour_jitter(image, 0.0, np.random.default_rng(0)), image, atol=1e-6)
    jittered = transforms.colour_jitter(image, 0.5, np.random.default_rng(0))
    assert jittered.min() >= 0 and jittered.max() <= 1 and not np.allclose(jittered, image)


def test_balanced_indices_give_every_class_the_largest_count():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 3)
    indices = pipeline.balanced_indices(labels, 3)
    np.testing.assert_array_equal(np.bincount(labels[indices]), [7, 7, 7])
    assert set(indices[labels[indices] == 1]) == {7, 8}
    with pytest.raises(DataError, match="class 3 has no training examples"):
        pipeline.balanced_indices(labels, 4)


def _synthetic(tiny_config):
    tiny_config.data.num_train = 24
    return pipeline.training_source(tiny_config)


def test_batches_are_a_function_of_seed_and_step(tiny_config):
    source = _synthetic(tiny_config)
    first = pipeline.training_dataset(source, tiny_config)
    again = pipeline.training_dataset(source, tiny_config)
    for step in (0, 1, 5, 17):  # 17 is in the sixth epoch: reshuffled, re-augmented
        np.testing.assert_array_equal(first[step]["image"], again[step]["image"])
    assert not np.array_equal(first[0]["image"], first[3]["image"])
    tiny_config.seed = 1
    other = pipeline.training_dataset(source, tiny_config)
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    batch = first[0]
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1


def test_epochs_cover_every_example_once(tiny_config):
    tiny_config.data.augment = False
    source = _synthetic(tiny_config)
    dataset = pipeline.training_dataset(source, tiny_config)
    originals = {source.examples[i]["image"].tobytes() for i in range(len(source))}
    for epoch in range(2):
        seen = [image.tobytes() for step in range(epoch * 3, epoch * 3 + 3) for image in dataset[step]["image"]]
        assert sorted(seen) == sorted(originals)


def test_saved_position_resumes_the_same_batches(tiny_config):
    source = _synthetic(tiny_config)
    mesh = parallel.make_mesh()
    straight = pipeline.train_batches(source, tiny_config, mesh)
    expected = [np.asarray(next(straight)["image"]) for _ in range(6)]
    first = pipeline.train_batches(source, tiny_config, mesh)
    for _ in range(4):
        next(first)
    state = first.get_state()  # two more batches may already be on the devices
    assert first.next_index() == 4
    resumed = pipeline.train_batches(source, tiny_config, mesh)
    resumed.set_state(state)
    for step in (4, 5):
        np.testing.assert_array_equal(np.asarray(next(resumed)["image"]), expected[step])


def test_hosts_split_each_global_batch_into_contiguous_parts(tiny_config, monkeypatch):
    source = _synthetic(tiny_config)
    single = pipeline.training_dataset(source, tiny_config)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    parts = []
    for host in (0, 1):
        monkeypatch.setattr(jax, "process_index", lambda host=host: host)
        parts.append(pipeline.training_dataset(source, tiny_config))
    for step in (0, 4):
        host_rows = np.concatenate([p[step]["image"] for p in parts])
        assert host_rows.shape == single[step]["image"].shape
        np.testing.assert_array_equal(host_rows, single[step]["image"])  # the same rows, in the same order


@pytest.fixture(scope="module")
def sut_data(tmp_path_factory):
    manual = copy_pairs(shared_dataset("sut_crack_seg"), tmp_path_factory.mktemp("files"),
                        [str(i) for i in range(1, 11)])
    data_dir = tmp_path_factory.mktemp("data")
    prepare("crack_segmentation/sut", manual, data_dir)
    return data_dir


@pytest.mark.real_data
def test_real_crack_patches_reach_balanced_device_batches(sut_data, tiny_config):
    tiny_config.data.name = "crack_segmentation/sut"
    tiny_config.data.data_dir = str(sut_data)
    tiny_config.data.image_size = 32  # 64 px patches resized
    source = pipeline.training_source(tiny_config)
    labels = source.examples.labels()
    assert np.bincount(labels)[0] > 2 * np.bincount(labels)[1]  # far more crack-free patches ...
    dataset = pipeline.training_dataset(source, tiny_config)
    drawn = np.concatenate([dataset[s]["label"] for s in range(40)])
    assert abs(drawn.mean() - 0.5) < 0.1  # ... but balanced batches
    batch = next(pipeline.train_batches(source, tiny_config, parallel.make_mesh()))
    assert batch["image"].shape == (8, 32, 32, 3) and len(batch["image"].sharding.device_set) == jax.device_count()


@pytest.mark.real_data
def test_evaluation_arrays_keep_masks_aligned_with_labels(sut_data, tiny_config):
    tiny_config.data.name = "crack_segmentation/sut"
    tiny_config.data.data_dir = str(sut_data)
    arrays = pipeline.evaluation_arrays(tiny_config, "validation")
    assert arrays["image"].shape[1:] == (32, 32, 3) and arrays["has_mask"].all()
    crack = arrays["label"] == 1
    assert crack.any() and (~crack).any()
    assert arrays["mask"][crack].any(axis=(1, 2)).all()
    assert not arrays["mask"][~crack].any()
    full = sources.open_split(tiny_config, "validation")
    assert len(full) == len(arrays["label"])


@pytest.mark.real_data
def test_full_image_view_is_resized_to_the_training_size(sut_data, tiny_config):
    tiny_config.data.name = "crack_segmentation/sut"
    tiny_config.data.data_dir = str(sut_data)
    tiny_config.data.view = "full"
    tiny_config.batch_size = 2
    source = pipeline.training_source(tiny_config)
    assert source.examples[0]["image"].shape == (512, 512, 3)  # whole photos, not patches
    with pytest.raises(DataError, match=r"class 0 \(no_crack\) has no training examples"):
        pipeline.training_dataset(source, tiny_config)
    tiny_config.data.balance_classes = False
    batch = pipeline.training_dataset(source, tiny_config)[0]
    assert batch["image"].shape == (2, 32, 32, 3)  # 512 px photos at 32 px
    arrays = pipeline.evaluation_arrays(tiny_config, "train")
    assert arrays["image"].shape == (len(source), 32, 32, 3)
    assert (arrays["label"] == 1).all()  # every SUT photo has a crack ...
    assert arrays["mask"].any(axis=(1, 2)).all()  # ... which survives a 16x smaller mask
