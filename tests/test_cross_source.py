"""Cross-source evaluation and pooled training: a run explained on another prepared dataset with every
threshold from its own validation split, refusals of targets it cannot read, and pools of datasets
joined by "+" (their union, resumable like any one dataset). Tiny generated crack sources: no real data."""

import json
import subprocess
import sys

import cracks
import numpy as np
import pytest
from data_helpers import prepare, synthetic_crack_source
from PIL import Image

from cfjax import parallel, train
from cfjax.config.validation import validate_config
from cfjax.data import pipeline, sources, transforms
from cfjax.errors import ConfigError, DataError
from cfjax.explain import targets
from cfjax.explain.run import explain


@pytest.fixture(scope="module")
def crack_sources(tmp_path_factory):
    """Three generated crack sources: a and b with 64 px patches (like the real ones), c with 32 px patches."""
    data_dir = tmp_path_factory.mktemp("sources") / "data"
    a = synthetic_crack_source("a", data_dir, seed=0)
    b = synthetic_crack_source("b", data_dir, seed=1)
    synthetic_crack_source("c", data_dir, seed=2)  # prepared below again with other patches
    return data_dir, a, b


def _config(data_dir, name):
    config = cracks.get_config("tiny")
    config.data.name, config.data.data_dir = name, str(data_dir)
    return config


def test_a_pool_is_its_datasets_end_to_end_for_every_split(crack_sources):
    data_dir, a, b = crack_sources
    pooled = _config(data_dir, f"{a}+{b}")
    validate_config(pooled)
    for split in ("train", "validation", "test"):
        pool = sources.open_split(pooled, split)
        parts = [sources.open_split(_config(data_dir, name), split) for name in (a, b)]
        assert len(pool) == sum(len(p) for p in parts)
        assert pool.class_names == parts[0].class_names
        np.testing.assert_array_equal(pool.examples.labels(), np.concatenate([p.examples.labels() for p in parts]))
        last = len(parts[0]) - 1
        np.testing.assert_array_equal(pool.examples[last]["image"], parts[0].examples[last]["image"])
        np.testing.assert_array_equal(pool.examples[last + 1]["image"], parts[1].examples[0]["image"])
    with pytest.raises(IndexError):
        sources.open_split(pooled, "test").examples[len(pool)]
    # The thresholds of a pooled run are tuned on the pooled validation splits.
    arrays = pipeline.evaluation_arrays(pooled, "validation")
    assert len(arrays["label"]) == sum(len(sources.open_split(_config(data_dir, n), "validation")) for n in (a, b))


def test_training_on_a_pool_sees_every_example_once_an_epoch_and_resumes_exactly(crack_sources):
    data_dir, a, b = crack_sources
    config = _config(data_dir, f"{a}+{b}")
    config.data.augment, config.data.balance_classes = False, False
    config.data.image_size = 64  # the patches' own size: images reach the batches unchanged
    source = pipeline.training_source(config)
    dataset = pipeline.training_dataset(source, config)
    steps = -(-len(source) // config.batch_size)
    stream = np.concatenate([dataset[step]["image"] for step in range(steps)])[:len(source)]  # the first epoch
    every = [transforms.to_float(source.examples[i]["image"]) for i in range(len(source))]
    assert sorted(image.tobytes() for image in stream) == sorted(image.tobytes() for image in every)
    parts = [len(sources.open_split(_config(data_dir, n), "train")) for n in (a, b)]
    assert len(source) == sum(parts) and min(parts) > 0  # both datasets, each in proportion to its size
    config.data.augment, config.data.balance_classes = True, True
    config.data.image_size = 32
    mesh = parallel.make_mesh()
    straight = pipeline.train_batches(source, config, mesh)
    expected = [np.asarray(next(straight)["image"]) for _ in range(7)]
    straight.close()
    stopped = pipeline.train_batches(source, config, mesh)
    for _ in range(5):
        next(stopped)
    state = stopped.get_state()
    stopped.close()
    assert state["dataset"]["name"] == f"{a}+{b}" and state["dataset"]["examples"] == len(source)
    resumed = pipeline.train_batches(source, config, mesh)
    resumed.set_state(state)
    for step in (5, 6):
        np.testing.assert_array_equal(np.asarray(next(resumed)["image"]), expected[step])
    resumed.close()
    alone = pipeline.train_batches(pipeline.training_source(_config(data_dir, a)), _config(data_dir, a), mesh)
    with pytest.raises(DataError, match="saved input position was over dataset"):
        alone.set_state(state)  # a pool's position never resumes a run on one of its datasets
    alone.close()


def test_pools_are_checked(crack_sources, tmp_path):
    data_dir, a, _ = crack_sources
    with pytest.raises(ConfigError, match="names a dataset twice"):
        validate_config(_config(data_dir, f"{a}+{a}"))
    with pytest.raises(ConfigError, match="joined by '\\+'"):
        validate_config(_config(data_dir, f"{a}+nonsense/x"))
    with pytest.raises(DataError, match="no prepared dataset crack_segmentation/missing"):
        sources.check_prepared(_config(data_dir, f"{a}+crack_segmentation/missing"))
    with pytest.raises(ConfigError, match="joined by"):
        validate_config(_config(data_dir, f"{a}+synthetic"))
    rng = np.random.default_rng(0)
    for cls in ("good", "scratched"):  # two classes, but not a crack source's
        (tmp_path / "mine" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "mine" / cls / f"{cls}{i}.png")
    prepare("class_folders", tmp_path / "mine", data_dir)
    with pytest.raises(DataError, match=r"class_folders has the classes \('good', 'scratched'\), crack_segmentation/a "
                                        r"has \('no_crack', 'crack'\); a pool's datasets must share their classes"):
        sources.open_split(_config(data_dir, f"{a}+class_folders"), "train")


@pytest.fixture(scope="module")
def run_on_a(crack_sources, tmp_path_factory):
    data_dir, a, _ = crack_sources
    config = _config(data_dir, a)
    workdir = str(tmp_path_factory.mktemp("run_a"))
    train.train_and_evaluate(config, workdir)
    return config, workdir


@pytest.mark.slow
def test_explain_on_another_source_takes_every_threshold_from_the_runs_own_validation(crack_sources, run_on_a):
    data_dir, a, b = crack_sources
    config, workdir = run_on_a
    own = explain(config, workdir)
    other = explain(config, workdir, eval_data=b)
    assert other["out_dir"] == f"{workdir}/explain_crack_segmentation_b"
    saved = json.loads(open(f"{other['out_dir']}/explain.json").read())
    assert saved["data"]["trained_on"] == a and saved["data"]["evaluated_on"] == b and saved["data"]["cross_source"]
    assert saved["data"]["source"] == f"the test split of {b}"
    assert saved["data"]["num_images"] == len(sources.open_split(_config(data_dir, b), "test"))
    assert saved["settings"]["thresholds_from"] == f"the validation split of {a}"
    assert saved["settings"]["top_k_percent"] == own["settings"]["top_k_percent"]
    for name, method in other["methods"].items():
        mine = own["methods"][name]
        assert method["thresholdings"]["tuned"]["threshold"] == mine["thresholdings"]["tuned"]["threshold"], name
        assert method["tolerant"]["ods_threshold"] == mine["tolerant"]["ods_threshold"], name
        assert method["validation"] == mine["validation"], name  # the same source validation scores
    # The test scores are the target's: not the run's own test split.
    assert other["methods"]["dark_pixels"]["auroc"] != own["methods"]["dark_pixels"]["auroc"]
    assert "Cross-source: trained on crack_segmentation/a" in open(f"{other['out_dir']}/explain.md").read()
    # The run's own dataset as a target is its own test split again, with the same numbers.
    same = explain(config, workdir, eval_data=a, out_dir=f"{workdir}/same")
    assert same["methods"]["counterfactual"] == own["methods"]["counterfactual"]


@pytest.mark.slow
def test_explain_refuses_targets_the_run_cannot_read(crack_sources, run_on_a, tmp_path):
    data_dir, _, _ = crack_sources
    config, workdir = run_on_a
    prepare("crack_segmentation/folder", data_dir.parent / "c_files", data_dir, overrides={"patch_size": 32},
            config_name="c32")
    with pytest.raises(DataError, match=r"^--eval_data=crack_segmentation/c32: its test patches are 32x32 px, the "
                                        r"run was trained on 64x64 px patches"):
        explain(config, workdir, eval_data="crack_segmentation/c32", out_dir=str(tmp_path / "x"))
    with pytest.raises(DataError, match="^--eval_data=crack_segmentation/nowhere: .*no prepared dataset"):
        explain(config, workdir, eval_data="crack_segmentation/nowhere", out_dir=str(tmp_path / "x"))
    with pytest.raises(DataError, match="give one of them"):
        explain(config, workdir, eval_data="crack_segmentation/b", folder=str(tmp_path), out_dir=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


@pytest.mark.subprocess
def test_eval_data_is_refused_outside_explain(repo_root, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cfjax.main", "--config=configs/cracks.py:tiny",
                           f"--workdir={tmp_path / 'run'}", "--eval_data=crack_segmentation/uav75"], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "cfjax: error: --eval_data is for --mode=explain: the dataset a trained run is scored on")
    assert not (tmp_path / "run").exists()


def _prepared_here(*names):
    missing = [name for name in names if sources.prepared_path(name, None) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not prepared in {sources.default_data_dir()}")


@pytest.mark.real_data
def test_the_real_crack_sources_pool_and_read_each_other():
    """SUT-Crack, CRACK500 and UAV75 as prepared here: 64 px patches of one class list, so each is a valid
    target of a run trained on another, and any two pool."""
    names = ("crack_segmentation/sut", "crack_segmentation/crack500", "crack_segmentation/uav75")
    _prepared_here(*names)
    config = cracks.get_config("sut")
    for source in names:
        for target in names:
            assert targets.target_config(sources.with_dataset(config, source), target).data.name == target
    pool = sources.with_dataset(config, f"{names[0]}+{names[2]}")
    sizes = [len(sources.open_split(sources.with_dataset(config, n), "validation")) for n in (names[0], names[2])]
    assert len(sources.open_split(pool, "validation")) == sum(sizes)
