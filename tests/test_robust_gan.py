"""The robust counterfactual GAN (`model="robust_gan"`): D trains on PGD examples inside the GAN step.
Its step compiles once across the epsilon ramp and its attack really raises D's loss; the detector
option labels the PGD examples "fake"; a tiny run trains, checkpoints, resumes bit for bit, and is
explained and attacked like a GAN run."""

import json
import math
import os
import signal
import subprocess
import sys

import chex
import cracks
import fruits
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cfjax import adversarial_training, checkpoint, kinds, losses, parallel, steps, train
from cfjax.config.compare import flatten_dict
from cfjax.config.validation import validate_config
from cfjax.data import pipeline, synthetic
from cfjax.errors import ConfigError
from cfjax.explain.run import explain
from cfjax.robustness.run import attack


def _robust_config(variant: str = "tiny,robust"):
    config = cracks.get_config(variant)
    validate_config(config)
    return config


def _models_state_batch(config):
    mesh = parallel.make_mesh()
    models = kinds.make_kind(config, mesh).models
    state = steps.make_init_fn(models, config, mesh)(jax.random.PRNGKey(config.seed))
    data = synthetic.generate_split("train", config.batch_size, image_size=config.data.image_size,
                                    num_classes=config.num_classes)
    return mesh, models, state, parallel.shard_batch({"image": data["image"], "label": data["label"]}, mesh)


def test_the_robust_configs_ramp_epsilon_as_the_pgd_trained_classifier_does():
    import baselines

    for robust, classifier in ((fruits.get_config("robust"), baselines.get_config("adversarial,fruits")),
                               (cracks.get_config("sut,robust"), baselines.get_config("adversarial,sut"))):
        validate_config(robust)
        assert robust.model == "robust_gan" and robust.name.endswith("_robust")
        assert robust.adversarial_training.to_dict() == classifier.adversarial_training.to_dict()
        assert robust.adversarial_training.warmup_steps == robust.num_steps // 3
        assert not robust.adversarial_training.also_fake
        assert robust.data.name == classifier.data.name
    for module, variant in ((fruits, "default"), (fruits, "tiny"), (cracks, "sut"), (cracks, "accelerator")):
        plain, robust = (flatten_dict(module.get_config(arg).to_dict())
                         for arg in (variant, f"{variant},robust"))
        changed = {field for field in plain if plain[field] != robust[field]}
        assert changed <= {"name", "model", "adversarial_training.epsilon", "adversarial_training.step_size",
                           "adversarial_training.warmup_steps"}, changed  # the GAN it mirrors, but for D's PGD
    robust = cracks.get_config("tiny,robust")
    robust.num_steps = 90  # the ramp follows num_steps, as the classifier's does
    assert robust.adversarial_training.warmup_steps == 30
    assert fruits.get_config("tiny,robust").name == "fruits_tiny_robust"


def test_the_detector_configs_are_the_robust_ones_that_also_learn_pgd_examples_as_fake():
    for module, variant in ((fruits, "default"), (fruits, "tiny"), (cracks, "sut"), (cracks, "accelerator")):
        robust, detector = (module.get_config(f"{variant},{model}") for model in ("robust", "detector"))
        validate_config(detector)
        assert detector.adversarial_training.also_fake and detector.name.endswith("_detector")
        changed = {field for field, value in flatten_dict(robust.to_dict()).items()
                   if flatten_dict(detector.to_dict())[field] != value}
        assert changed == {"name", "adversarial_training.also_fake", "adversarial_training.fake_weight_scale"}, changed
        assert detector.adversarial_training.fake_weight_scale == 3.0  # chosen on the fruit validation split
    mesh = parallel.make_mesh()
    names = {variant: [r.name for r in kinds.make_kind(cracks.get_config(f"tiny,{variant}"), mesh).readouts({
        "g_ema_params": {}, "d_params": {}})] for variant in ("robust", "detector")}
    assert names == {"robust": ["robust_D", "robust_G_head"], "detector": ["detector_D", "detector_G_head"]}


def test_a_robust_gan_without_a_budget_is_refused():
    config = _robust_config()
    config.adversarial_training.epsilon = 0.0
    with pytest.raises(ConfigError, match="config.model='robust_gan' trains D on PGD examples: must be > 0"):
        validate_config(config)


def test_only_the_robust_gan_labels_pgd_examples_fake():
    config = cracks.get_config("tiny")
    config.adversarial_training.also_fake = True
    with pytest.raises(ConfigError, match="config.adversarial_training.also_fake=True: labels PGD examples"):
        validate_config(config)


def test_detector_loss_learns_the_class_readout_and_fake_on_the_same_examples():
    """The class term reads the K class logits only; the fake term pushes the K+1 readout to "fake"."""
    labels = jnp.array([1])
    flagged = jnp.array([[0.0, 2.0, 5.0]])  # right class among the K, and "fake" overall
    taken_for_real = jnp.array([[0.0, 2.0, -5.0]])
    loss_flagged, terms = losses.detector_loss(flagged, labels, fake_weight=0.5)
    loss_real, _ = losses.detector_loss(taken_for_real, labels, fake_weight=0.5)
    class_ce = math.log(1 + math.exp(-2.0))
    assert float(terms["d_detector_class_ce"]) == pytest.approx(class_ce, rel=1e-6)
    fake_ce = math.log(1 + math.exp(2) + math.exp(5)) - 5.0
    assert float(terms["d_detector_fake_ce"]) == pytest.approx(fake_ce, rel=1e-5)
    assert float(loss_flagged) < float(loss_real)  # flagging a PGD example as fake is what it rewards
    # and the fake logit does not change the class term
    assert float(losses.detector_loss(taken_for_real, labels, fake_weight=0.0)[0]) == pytest.approx(class_ce, rel=1e-6)


@pytest.mark.slow
def test_the_step_compiles_once_across_the_ramp_and_its_attack_raises_d_loss():
    """Epsilon follows the traced step (1/2 of the budget at step 0, the full budget from step 1 with a
    2-step ramp) without a retrace; the PGD examples cost D more than the clean images at every step."""
    config = _robust_config()
    warmup, epsilon = config.adversarial_training.warmup_steps, config.adversarial_training.epsilon
    assert warmup == 2
    chex.clear_trace_counter()
    mesh, models, state, batch = _models_state_batch(config)
    step = steps.make_gan_step(models, config, mesh, max_traces=1)
    old_leaf = state.d_params["Dense_0"]["kernel"]
    history = []
    for _ in range(4):
        state, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
    assert old_leaf.is_deleted(), "the state should be donated"
    assert [float(m["adversarial_epsilon"]) for m in history] == pytest.approx([epsilon / 2] + [epsilon] * 3)
    for m in history:
        assert bool(m["finite"])
        assert m["d_adversarial_class_ce"] > m["d_clean_class_ce"] + 0.05, m
        assert m["d_acc_adversarial"] <= m["d_acc_real"]
    assert "d_detector_fake_ce" not in history[0]  # no detector term without also_fake
    chex.clear_trace_counter()


def test_the_pgd_examples_stay_in_the_budget_and_beat_random_noise():
    """The attack inside the step is the training attack of `adversarial_training` against D's class
    readout: within epsilon, and worse for D than uniform noise of the same size."""
    config = _robust_config()
    _, models, state, batch = _models_state_batch(config)
    images, labels = jax.device_get(batch["image"]), jax.device_get(batch["label"])
    adversary = adversarial_training.from_config(config)
    k = config.num_classes

    def d_class_ce(x):
        logits = models.discriminator.apply({"params": state.d_params}, x, train=False)
        return float(losses.cross_entropy(logits[..., :k], labels))

    result = adversary.attack(lambda x: models.discriminator.apply({"params": state.d_params}, x, train=False),
                              images, labels, jax.random.PRNGKey(3), jnp.asarray(10))
    change = np.abs(np.asarray(result.adversarial) - images).max()
    assert change <= adversary.epsilon + 1e-6
    noise = np.clip(images + np.random.default_rng(0).uniform(-1, 1, images.shape) * adversary.epsilon, 0, 1)
    assert d_class_ce(result.adversarial) > d_class_ce(noise) + 0.05 > d_class_ce(images) - 0.5


def test_the_detector_weighs_its_pgd_examples_fake_term_by_its_own_scale():
    """D's loss grows by exactly scale x loss.fake_weight x the PGD examples' fake CE (same key, same
    examples); the scale is refused without the detector option."""
    losses_by_scale = {}
    for scale in (0.0, 3.0):
        config = _robust_config("tiny,detector")
        config.adversarial_training.fake_weight_scale = scale
        validate_config(config)
        mesh, models, state, batch = _models_state_batch(config)
        metrics = jax.device_get(steps.make_gan_step(models, config, mesh)(state, batch)[1])
        losses_by_scale[scale] = (float(metrics["d_loss"]), float(metrics["d_detector_fake_ce"]))
    (without, fake_ce), (with_scale, _) = losses_by_scale[0.0], losses_by_scale[3.0]
    assert fake_ce > 0 and with_scale - without == pytest.approx(3.0 * config.loss.fake_weight * fake_ce, rel=1e-4)
    robust = _robust_config()
    robust.adversarial_training.fake_weight_scale = 2.0
    with pytest.raises(ConfigError, match="fake_weight_scale=2.0: weighs the PGD examples' fake term"):
        validate_config(robust)


@pytest.mark.slow
def test_with_the_detector_option_d_learns_its_pgd_examples_as_fake():
    """On one fixed batch at 16/255, the detector's D comes to give its PGD examples a higher p_fake than
    the clean images; without the option it takes them for real (their true class), like the clean ones."""
    gaps = {}
    for also_fake in (True, False):
        config = _robust_config()
        config.adversarial_training.also_fake = also_fake
        config.adversarial_training.epsilon = 16 / 255
        config.adversarial_training.warmup_steps = 0
        config.loss.fake_weight = 0.1  # generated images barely count: the contrast is the PGD examples
        mesh, models, state, batch = _models_state_batch(config)
        step = steps.make_gan_step(models, config, mesh)
        for _ in range(40):
            state, metrics = step(state, batch)
        metrics = jax.device_get(metrics)
        assert bool(metrics["finite"]) and ("d_detector_fake_ce" in metrics) == also_fake
        gaps[also_fake] = float(metrics["p_fake_adversarial"] - metrics["p_fake_real"])
    # measured: 0.103 with the option, -0.032 without
    assert gaps[True] > 0.05 and gaps[True] > gaps[False] + 0.08, gaps


def _stop_during_step_3(monkeypatch):
    original = pipeline.TrainBatches.__next__

    def signal_during_step_3(batches):
        if batches.next_index() == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(batches)

    monkeypatch.setattr(pipeline.TrainBatches, "__next__", signal_during_step_3)
    return original


def _restored_state(workdir, config):
    mesh = parallel.make_mesh()
    kind = kinds.make_kind(config, mesh)
    ckpt = checkpoint.Checkpointer(str(workdir))
    state = jax.device_get(ckpt.restore(checkpoint.abstract_like(kind.init_state(jax.random.PRNGKey(0)))))
    ckpt.close()
    return state


@pytest.mark.slow
def test_a_tiny_robust_run_trains_resumes_bit_exactly_and_is_explained_and_attacked(tmp_path, monkeypatch):
    config = _robust_config()
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
    assert straight["model"] == "robust_gan" and "flip_rate" in straight["test"]
    assert "iou_counterfactual" in straight["test"]
    lines = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    logged = [line for line in lines if "train/d_acc_adversarial" in line]
    assert logged and "train/adversarial_epsilon" in logged[-1]

    original = _stop_during_step_3(monkeypatch)
    with pytest.raises(train.Preempted, match="stopped after step 3 and saved it"):
        train.train_and_evaluate(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(pipeline.TrainBatches, "__next__", original)
    resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
    chex.assert_trees_all_equal(_restored_state(tmp_path / "resumed", config),
                                _restored_state(tmp_path / "straight", config))
    assert resumed["test"] == straight["test"]

    workdir = str(tmp_path / "straight")
    config.attack.linf_epsilons_255 = (4.0,)
    config.attack.l2_epsilons = (0.5,)
    robustness = attack(config, workdir, out_dir=str(tmp_path / "attack"))
    assert set(robustness["models"]) == {"robust_D", "robust_G_head"}
    assert robustness["model"] == "robust_gan"
    d = robustness["models"]["robust_D"]
    assert {row["group"] for row in d["checks"]} >= {"reference", "strong", "adaptive"}  # D keeps its detector
    assert "auroc_p_fake_wrong_vs_correct" in d["clean"]

    explained = explain(config, workdir, out_dir=str(tmp_path / "explain"))
    assert explained["model"] == "robust_gan"
    gan_methods = kinds.GanKind(cracks.get_config("tiny"), parallel.make_mesh()).saliency_methods().names
    assert set(gan_methods) <= set(explained["methods"])
    assert explained["methods"]["counterfactual"]["thresholdings"]["tuned"]["iou_mean"] >= 0.0


def _tiny_flags() -> list[str]:
    """The fruit config's `:tiny` sizes as --config flags, on the embedded synthetic images: what the table
    scripts' fixed configs become for a test (as experiments/reproduce.py's --quick does)."""
    default, tiny = (flatten_dict(fruits.get_config(v).to_dict()) for v in ("default", "tiny"))
    changed = sorted((field, value) for field, value in tiny.items() if default.get(field) != value and field != "name")
    return [f"--config.{field}={value}" for field, value in changed] + ["--config.data.name=synthetic"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_experiment_script_trains_and_tabulates_tiny_runs(tmp_path, repo_root):
    """experiments/robust_gan.py end to end (a subprocess, as a user runs it) on tiny runs of every model
    it needs, seed 0, with one setting of the ablation grid (tests/test_harness.py derives the others' flags):
    the runs of the two table scripts it reuses, its own, and its files."""
    out, runs = tmp_path / "results", tmp_path / "runs"
    command = [sys.executable, str(repo_root / "experiments" / "robust_gan.py"), "--train",
               "--ablation=fake_weight_0", "--seeds=0", f"--runs={runs}", f"--out={out}", "--",
               *_tiny_flags()]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=3000, check=False)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    table = (out / "robust_gan.md").read_text()
    for row in ("| robust GAN: D |", "| detector GAN: D |", "| plain GAN: D |", "| plain classifier |",
                "| PGD-trained classifier", "| robust_gan: **cfjax counterfactual mask**",
                "| detector_gan: **cfjax counterfactual mask**", "| supervised U-Net", "| fake_weight_0 |",
                "| default (plain GAN) |"):
        assert row in table, row
    for candidate in ("robust GAN: D", "detector GAN: D"):  # each candidate's aims, every one measured
        aims = table.split(f"* **{candidate}**\n")[1].split("\n* ")[0]
        assert aims.count("  * ") - aims.count("  * (not an aim)") == 4 and "not measured" not in aims, aims
        assert "clean accuracy within 2 points of the plain classifier's: " in aims
        assert "ensemble robust accuracy at 4/255" in aims  # the ensemble at the check budget
    assert "* One model meeting every aim: " in table
    summary = json.loads((out / "robust_gan.json").read_text())
    assert summary["ablation_flags"]["fake_weight_0"] == ["--config.loss.fake_weight=0.0"]
    assert set(summary["fruit"]) == {"plain classifier", "PGD-trained classifier (L∞ 4/255)", "plain GAN: D",
                                     "robust GAN: D", "detector GAN: D"}
    assert {"counterfactual", "robust_gan/counterfactual", "detector_gan/counterfactual",
            "segmenter"} <= set(summary["cracks"])
    ablated = json.loads((runs / "fruits_ablation_fake_weight_0_s0" / "config.json").read_text())
    assert ablated["loss"]["fake_weight"] == 0.0 and ablated["seed"] == 0
    for run, also_fake in (("fruits_robust_s0", False), ("fruits_detector_s0", True)):
        trained = json.loads((runs / run / "results.json").read_text())
        assert trained["model"] == "robust_gan", run
        assert json.loads((runs / run / "config.json").read_text())["adversarial_training"]["also_fake"] is also_fake
    attacked = json.loads((runs / "fruits_ablation_fake_weight_0_s0" / "attack" / "robustness.json").read_text())
    assert set(attacked["models"]) == {"D"}
    robust = json.loads((runs / "fruits_robust_s0" / "attack" / "robustness.json").read_text())["models"]
    assert set(robust) == {"robust_D"}  # its G head is not a model the aims compare: not attacked
    ensemble = [r for r in robust["robust_D"]["sweeps"] if r["group"] == "ensemble"]
    assert [round(r["epsilon"] * 255, 6) for r in ensemble] == [2.0, 4.0, 8.0]  # the table's budgets only


@pytest.mark.perf
@pytest.mark.slow
@pytest.mark.subprocess
def test_the_step_cost_benchmark_times_both_steps_at_a_tiny_size(repo_root):
    """experiments/benchmarks/robust_step.py runs (its figures are measured by running it, not asserted)."""
    command = [sys.executable, str(repo_root / "experiments" / "benchmarks" / "robust_step.py"), "--variant=tiny",
               "--steps=1"]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("gan (32 px, batch 8") and lines[1].startswith("robust_gan (32 px, batch 8")
    assert lines[2].startswith("robust / plain, medians: ")
