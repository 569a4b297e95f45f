"""`--mode=attack` end to end on tiny runs (sweeps, checks, transfer, report files), its scores against
hand-computed cases, and the errors a user meets."""

import dataclasses
import json
import os
import re

import baselines
import cracks
import numpy as np
import pytest

from cfjax import attacks, evaluate, kinds, parallel, train
from cfjax.errors import CheckpointError, ConfigError
from cfjax.robustness import metrics, protocols, report, sweep
from cfjax.robustness.ensemble_sweep import EnsembleSweep
from cfjax.robustness.progress import STAGE, SweepProgress
from cfjax.robustness.run import attack


def test_f1_is_the_damaged_class_for_two_classes_and_macro_beyond():
    labels = np.array([0, 0, 1, 1, 1])
    predicted = np.array([0, 1, 1, 1, 0])
    assert metrics.f1(predicted, labels, 2) == pytest.approx(2 * 2 / (3 + 3))
    three = np.array([0, 1, 2, 2])
    assert metrics.f1(three, three, 3) == 1.0
    assert metrics.f1(np.array([0, 0, 0, 0]), three, 3) == pytest.approx((2 * 1 / 5 + 0 + 0) / 3)


def test_auroc_counts_ties_half_and_needs_both_sides():
    assert metrics.auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert metrics.auroc([0.1], [0.9]) == 0.0
    assert metrics.auroc([0.5, 0.9], [0.5, 0.1]) == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert metrics.auroc([], [0.3]) is None


def test_risk_coverage_abstains_on_the_most_uncertain_first():
    curve = metrics.risk_coverage(np.array([0.9, 0.1, 0.5, 0.3]), np.array([False, True, True, False]))
    # kept in order 0.1 (right), 0.3 (wrong), 0.5 (right), 0.9 (wrong)
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["risk"] == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    assert curve["aurc"] == pytest.approx(np.mean([0.0, 0.5, 1 / 3, 0.5]))
    assert metrics.max_softmax_uncertainty(np.array([[0.0, 0.0], [10.0, -10.0]])) == pytest.approx([0.5, 0.0],
                                                                                                      abs=1e-6)


def test_the_sweep_plot_draws_budgets_in_increasing_order_whatever_order_they_ran_in():
    rows = [{"group": "ensemble", "epsilon": eps / 255, "accuracy": acc} for eps, acc in ((4, 0.8), (2, 0.9), (8, 0.4))]
    rows.append({"group": "linf", "epsilon": 1 / 255, "accuracy": 0.95})  # another line: not in this one
    model = {"clean": {"accuracy": 1.0}, "sweeps": rows}
    x, y = report.sweep_curve(model, "linf", "ensemble", "accuracy")
    assert x == pytest.approx([0, 2, 4, 8]) and y == [1.0, 0.9, 0.8, 0.4]
    assert report.sweep_curve(model, "linf", "ensemble", "mean_p_fake") == ([], [])  # no such field: no line


def test_robustness_md_lists_each_attacks_budgets_in_increasing_order():
    row = lambda group, eps, acc: {"group": group, "norm": "linf", "loss": "ce", "epsilon": eps / 255,
                                   "step_size": eps / 2550, "iterations": 10, "restarts": 1, "accuracy": acc, "f1": acc,
                                   "auroc_max_softmax_clean_vs_adversarial": 0.5}
    sweeps = [row("linf", 4, 0.6), row("ensemble", 8, 0.2), row("linf", 2, 0.8), row("ensemble", 2, 0.7)]
    for ensemble_row in sweeps[1::2]:
        ensemble_row.update(attack="ensemble", targets=1, queries=10)
    results = {"workdir": "RUN", "step": 1, "data": {"num_images": 4, "source": "test"},
               "models": {"D": {"clean": {"accuracy": 1.0, "f1": 1.0, "aurc": {}}, "sweeps": sweeps, "checks": []}}}
    table = [line.split(" | ")[:2] for line in report.markdown(results).splitlines() if line.startswith("| linf |")
             or line.startswith("| ensemble |")]
    assert table == [["| linf", "linf ε=2/255, α=0.2/255"], ["| linf", "linf ε=4/255, α=0.4/255"],
                     ["| ensemble", "linf ε=2/255"], ["| ensemble", "linf ε=8/255"]]


def test_detection_scores_every_attacked_input_and_the_successful_attacks_alone():
    """Four examples with K = 2 and a fake logit. Clean: 0, 1 right, 2 wrong, 3 right. The attack flips 0 (right to
    wrong), leaves 1 right, leaves 3 exactly clean (as the ensemble returns an example it could not break), and 2
    stays wrong. Only example 0 is a successful attack; the negatives are the clean inputs classified right."""
    labels = np.array([1, 1, 1, 0])
    clean = np.array([[0.0, 2.0, -3.0], [0.0, 2.0, -1.0], [2.0, 0.0, -2.0], [2.0, 0.0, 3.0]])
    adversarial = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, -4.0], [2.0, 0.0, -2.0], [2.0, 0.0, 3.0]])
    row = sweep.scores(clean, adversarial, labels, num_classes=2, has_detector=True)
    assert row["accuracy"] == 0.5 and row["num_successful"] == 1
    p_fake = lambda z: 1 / (1 + np.exp(-(z[:, 2] - np.logaddexp(z[:, 0], z[:, 1]))))
    fake_clean, fake_adversarial = p_fake(clean), p_fake(adversarial)
    # the flipped example's p_fake (0.24) against the clean examples classified right: above 0 and 1, below 3
    expected = np.mean([fake_adversarial[0] > fake_clean[i] for i in (0, 1, 3)])
    assert row["auroc_p_fake_clean_vs_successful"] == pytest.approx(expected) == pytest.approx(2 / 3)
    assert row["auroc_p_fake_clean_vs_adversarial"] == pytest.approx(metrics.auroc(fake_adversarial, fake_clean))
    assert row["auroc_max_softmax_clean_vs_successful"] is not None
    # an attack that broke nothing has no successful examples to score
    unbroken = sweep.scores(clean, clean, labels, num_classes=2, has_detector=True)
    assert unbroken["num_successful"] == 0 and unbroken["auroc_p_fake_clean_vs_successful"] is None
    assert unbroken["auroc_p_fake_clean_vs_adversarial"] == 0.5  # identical inputs: every pair a tie


def test_the_papers_protocol_and_the_checks():
    attack_config = cracks.get_config("default").attack
    settings = protocols.sweep_settings(attack_config)
    paper = [s for s in settings if s.group == "paper"]
    assert [round(s.step_size * 255, 3) for s in paper] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert all(s.epsilon == pytest.approx(10 * s.step_size) and s.iterations == 10 for s in paper)
    linf = [s for s in settings if s.group == "linf"]
    assert all(s.step_size == pytest.approx(2.5 * s.epsilon / 10) for s in linf)
    assert {s.group for s in protocols.check_settings(attack_config, has_detector=False)} == {
        "reference", "margin", "strong"}
    checks = protocols.check_settings(attack_config, has_detector=True)
    adaptive = next(s for s in checks if s.group == "adaptive")
    assert adaptive.spec(2, 1.0).detector_weight == 1.0 and checks[0].spec(2, 1.0).detector_weight == 0.0
    assert adaptive.spec(2, 0.0).loss == "joint_margin" and checks[0].spec(2, 0.0).loss == "ce"
    # The ensemble: beside PGD at every L-inf budget, the default strong check, and adaptive against D.
    ensemble = [s for s in settings if s.group == "ensemble"]
    assert [s.epsilon for s in ensemble] == [s.epsilon for s in linf]
    assert ensemble[0].spec(2, 0.0) == attacks.EnsembleSpec(num_classes=2, iterations=100, targets=9, queries=5000)
    attack_config.ensemble_epsilons_255 = (2.0, 8.0)  # a table's budgets only; PGD still sweeps them all
    assert [round(s.epsilon * 255, 6) for s in protocols.sweep_settings(attack_config) if s.group == "ensemble"] == [
        2.0, 8.0] and len([s for s in protocols.sweep_settings(attack_config) if s.group == "linf"]) == len(linf)
    strong = next(s for s in checks if s.group == "strong")
    assert strong.attack == "ensemble" and strong.epsilon == pytest.approx(4 / 255)
    assert next(s for s in checks if s.group == "adaptive_ensemble").spec(2, 0.0).joint
    attack_config.strong, attack_config.ensemble = "pgd", False  # what runs attacked before the ensemble had
    assert not any(s.attack == "ensemble" for s in protocols.sweep_settings(attack_config)
                   + protocols.check_settings(attack_config, has_detector=True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    gan, classifier = cracks.get_config("tiny"), baselines.get_config("classifier,tiny")
    train.train_and_evaluate(gan, str(root / "gan"))
    train.train_and_evaluate(classifier, str(root / "classifier"))
    return gan, str(root / "gan"), classifier, str(root / "classifier")


@pytest.mark.slow
def test_attack_d_of_a_gan_run_with_a_transfer_check(runs, tmp_path, capsys):
    gan, gan_dir, _, classifier_dir = runs
    gan = gan.copy_and_resolve_references()
    gan.attack.models = ("D",)  # G's head is attacked the same way; its readout is checked below
    results = attack(gan, gan_dir, transfer_from=classifier_dir, out_dir=str(tmp_path))
    assert set(results["models"]) == {"D"}
    d = results["models"]["D"]
    assert [row["group"] for row in d["sweeps"]] == ["paper"] * 2 + ["linf"] * 2 + ["l2"] + ["ensemble"] * 2
    assert [row["group"] for row in d["checks"]] == ["reference", "margin", "strong", "adaptive", "adaptive_ensemble",
                                                     "transfer"]
    assert d["checks"][-1]["source"] == "cracks_tiny_classifier/classifier"
    for row in d["sweeps"] + d["checks"]:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["max_distance"] <= row["epsilon"] * (1 + 1e-5) + 1e-6
    strongest = max((r for r in d["sweeps"] if r["group"] == "linf"), key=lambda r: r["epsilon"])
    assert strongest["accuracy"] <= d["clean"]["accuracy"]
    ensemble = [r for r in d["sweeps"] if r["group"] == "ensemble"]
    assert ensemble[0]["accuracy"] >= ensemble[1]["accuracy"]  # monotone in the budget
    for row in ensemble:
        assert sum(row["broken_by"].values()) == round((1 - row["accuracy"]) * results["data"]["num_images"])
        assert row["num_successful"] == sum(row["broken_by"].values()) - row["broken_by"]["clean"]
        assert set(row["broken_by"]) == {"clean", "apgd-ce", "fab-t", "square"}  # K = 2: no DLR, as the reference
        left = list(row["attempted"].values())  # each member attacked only what the earlier ones left
        assert left[0] == results["data"]["num_images"]
        assert left[1:] == [left[i] - list(row["broken_by"].values())[i] for i in range(len(left) - 1)]
    assert next(r for r in d["checks"] if r["group"] == "strong")["attack"] == "ensemble"
    adaptive_ensemble = next(r for r in d["checks"] if r["group"] == "adaptive_ensemble")
    assert set(adaptive_ensemble["broken_by"]) == {"clean", "apgd-ce", "apgd-dlr", "fab-t", "square"}  # K+1 = 3
    reference, adaptive = d["checks"][0], d["checks"][3]
    assert adaptive["mean_p_fake"] < reference["mean_p_fake"]  # the adaptive attack also fools the detector
    assert set(d["risk_coverage"]) == {"max_softmax_clean", "p_fake_clean", "max_softmax_clean_and_adversarial",
                                       "p_fake_clean_and_adversarial"}
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert saved["models"]["D"]["clean"] == d["clean"]
    from cfjax.saved_runs import load_run, params_digest
    assert saved["params_digest"] == params_digest(load_run(gan, gan_dir).params)  # which weights were attacked
    assert "| transfer from cracks_tiny_classifier/classifier |" in (tmp_path / "robustness.md").read_text()
    table = (tmp_path / "robustness.md").read_text()
    assert "| ensemble | linf ε=2/255 | ensemble: 3 it., 1 targets, 5 queries" in table
    assert (tmp_path / "robustness.png").stat().st_size > 0 and (tmp_path / "risk_coverage.png").stat().st_size > 0
    progress = capsys.readouterr().out  # a line per setting, as each finishes
    assert f"cfjax: attack D: ensemble linf eps=2/255: accuracy {ensemble[0]['accuracy']:.3f} (" in progress
    assert "cfjax: attack D: linf eps=" in progress and "linf linf" not in progress  # the group only when it says more
    assert progress.count("cfjax: attack D: ") == len(d["sweeps"]) + len(d["checks"]) - 1  # transfer: no line


@pytest.mark.slow
def test_an_interrupted_attack_resumes_from_the_settings_it_finished(runs, tmp_path, monkeypatch):
    gan, gan_dir, _, _ = runs
    config = gan.copy_and_resolve_references()
    config.attack.models = ("D",)
    passes = []  # evaluator passes: the clean one, one per PGD setting, one per ensemble member that runs + scoring
    original_run, original_save = evaluate.SplitEvaluator.run, SweepProgress.save
    monkeypatch.setattr(evaluate.SplitEvaluator, "run",
                        lambda self, *args, **kw: passes.append(1) or original_run(self, *args, **kw))
    whole = attack(config, gan_dir, out_dir=str(tmp_path / "whole"))
    whole_passes = len(passes)

    def save_then_stop_at_the_fourth(self, *args):
        original_save(self, *args)
        if len(os.listdir(self.folder)) == 4:  # (a finished setting's save removes its stage file)
            raise KeyboardInterrupt  # the session ends in the middle of the sweep

    monkeypatch.setattr(SweepProgress, "save", save_then_stop_at_the_fourth)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        attack(config, gan_dir, out_dir=str(out))
    assert len(os.listdir(out / "partial")) == 4 and not (out / "robustness.json").exists()
    monkeypatch.setattr(SweepProgress, "save", original_save)
    passes.clear()
    resumed = attack(config, gan_dir, out_dir=str(out))
    assert len(passes) == whole_passes - 4  # the four finished settings were read back, not attacked again
    assert resumed["models"] == whole["models"]  # and give the same table
    assert not (out / "partial").exists()  # removed once robustness.json is written
    assert json.loads((out / "robustness.json").read_text())["models"]["D"]["clean"] == whole["models"]["D"]["clean"]


@pytest.mark.slow
def test_an_ensemble_stopped_between_batches_resumes_from_its_last_batch(runs, tmp_path, monkeypatch, capsys):
    """An ensemble setting saves its state after every batch: a rerun goes on from there (not from the
    setting's start) and gives the table an uninterrupted run gives."""
    gan, gan_dir, _, _ = runs
    config = gan.copy_and_resolve_references()
    config.attack.models = ("D",)
    whole = attack(config, gan_dir, out_dir=str(tmp_path / "whole"))
    original_save_stage, original_run = SweepProgress.save_stage, EnsembleSweep.run
    saved = []

    def save_then_stop_at_the_third(self, *args):
        original_save_stage(self, *args)
        saved.append({name: np.array(value) for name, value in args[-1].items()})
        if len(saved) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(SweepProgress, "save_stage", save_then_stop_at_the_third)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        attack(config, gan_dir, out_dir=str(out))
    assert len(list((out / "partial").glob("*" + STAGE))) == 1 and not (out / "robustness.json").exists()
    monkeypatch.setattr(SweepProgress, "save_stage", original_save_stage)
    started_from = []
    monkeypatch.setattr(EnsembleSweep, "run", lambda self, *args, **kw: started_from.append(kw["state"]) or
                        original_run(self, *args, **kw))
    capsys.readouterr()
    resumed = attack(config, gan_dir, out_dir=str(out))
    assert all(np.array_equal(started_from[0][name], value) for name, value in saved[-1].items())  # its last batch
    assert re.search(r"cfjax: attack D: \w+ linf eps=[\d.]+/255: resumes at [\w-]+: \d+ of the \d+ examples it "
                     r"attacks done\n", capsys.readouterr().out)
    assert all(state is None for state in started_from[1:])  # the settings after it start afresh
    assert resumed["models"] == whole["models"]
    assert not (out / "partial").exists()


def test_progress_lines_name_a_setting_by_its_group_only_where_that_says_more():
    linf, l2 = protocols.AttackSetting("linf", "linf", 4 / 255, 1 / 255, 10), protocols.AttackSetting(
        "l2", "l2", 0.5, 0.1, 10)
    assert (linf.label(), l2.label()) == ("linf eps=4/255", "l2 eps=0.5")
    assert dataclasses.replace(linf, group="ensemble").label() == "ensemble linf eps=4/255"
    assert dataclasses.replace(linf, group="").label() == "linf eps=4/255"


def test_saved_attack_outputs_are_read_back_only_for_the_same_run_and_setting(tmp_path):
    setting = protocols.check_settings(cracks.get_config("tiny").attack, has_detector=False)[0]
    run = {"config": "cracks_tiny", "step": 100, "seed": 0}
    SweepProgress(str(tmp_path), run).save("D", "D", setting, {"logits": np.arange(6.0).reshape(3, 2)})
    assert SweepProgress(str(tmp_path), run).load("D", "D", setting)["logits"].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert SweepProgress(str(tmp_path), {**run, "step": 200}).load("D", "D", setting) is None  # retrained
    assert SweepProgress(str(tmp_path), {**run, "seed": 1}).load("D", "D", setting) is None
    assert SweepProgress(str(tmp_path), run).load("G", "G", setting) is None
    assert SweepProgress(str(tmp_path), run).load("D", "D", dataclasses.replace(setting, epsilon=1.0)) is None
    (next(tmp_path.glob("*.npz"))).write_bytes(b"truncated")  # a crash mid-write: read as not done
    assert SweepProgress(str(tmp_path), run).load("D", "D", setting) is None
    # An unfinished setting's state: read back for the same setting only, gone once the setting is saved.
    SweepProgress(str(tmp_path), run).save_stage("D", "D", setting, {"member": np.asarray(2)})
    assert SweepProgress(str(tmp_path), run).load_stage("D", "D", setting)["member"] == 2
    stage = next(tmp_path.glob("*" + STAGE))
    whole = stage.read_bytes()
    stage.write_bytes(whole[: len(whole) // 2])  # damaged on disk (a zip cut short): read as no stage
    assert SweepProgress(str(tmp_path), run).load_stage("D", "D", setting) is None
    stage.write_bytes(whole)
    assert SweepProgress(str(tmp_path), {**run, "step": 200}).load_stage("D", "D", setting) is None
    assert SweepProgress(str(tmp_path), run).load("D", "D", setting) is None  # a stage is not a finished setting
    SweepProgress(str(tmp_path), run).save("D", "D", setting, {"logits": np.zeros((3, 2))})
    assert SweepProgress(str(tmp_path), run).load_stage("D", "D", setting) is None
    assert not list(tmp_path.glob("*" + STAGE))
    assert SweepProgress(None, run).load("D", "D", setting) is None


@pytest.mark.slow
def test_attack_reads_the_runs_saved_config(runs, tmp_path):
    """--mode=attack without --config: the run's own config; a --config sets only the evaluation sections
    and may not differ from the run elsewhere."""
    from cfjax.config.compare import config_differences
    from cfjax.config.resolve import for_saved_run

    gan, _, classifier, classifier_dir = runs
    config = for_saved_run(classifier_dir)
    assert config.name == classifier.name and config_differences(config.to_dict(), classifier.to_dict()) == []
    config.attack.max_examples = 8
    results = attack(config, classifier_dir, out_dir=str(tmp_path))
    assert set(results["models"]) == {"classifier"} and results["data"]["num_images"] == 8
    validation = attack(config, classifier_dir, split="validation")  # choosing without reading test
    assert validation["out_dir"] == os.path.join(classifier_dir, "attack_validation")
    assert validation["data"]["source"].startswith("the validation split")
    mine = classifier.copy_and_resolve_references()
    mine.attack.iterations, mine.num_steps = 2, 100
    merged = for_saved_run(classifier_dir, mine)
    assert merged.attack.iterations == 2 and merged.num_steps == classifier.num_steps
    with pytest.raises(CheckpointError, match="model: checkpoint has 'classifier', config has 'gan'"):
        for_saved_run(classifier_dir, gan)


@pytest.mark.slow
def test_the_attacked_readouts_of_each_run_kind(runs):
    gan, gan_dir, classifier, classifier_dir = runs
    from cfjax.data import pipeline
    from cfjax.saved_runs import load_run

    run = load_run(gan, gan_dir)
    d, g_head = run.kind.readouts(run.params)
    assert (d.name, d.num_classes, d.has_detector) == ("D", 2, True)
    assert (g_head.name, g_head.has_detector) == ("G_head", False)
    images = pipeline.evaluation_arrays(gan, "test")["image"][:8]
    _, head_logits = run.kind.models.generator.apply({"params": run.params[0]}, images, np.ones(8, np.int32))
    np.testing.assert_allclose(g_head.apply_fn(g_head.params, images), head_logits, atol=1e-5)
    assert d.apply_fn(d.params, images).shape == (8, 3)
    classifier_run = load_run(classifier, classifier_dir)
    assert [m.name for m in classifier_run.kind.readouts(classifier_run.params)] == ["classifier"]
    mesh = parallel.make_mesh()
    adversarial = kinds.make_kind(baselines.get_config("adversarial,tiny"), mesh)
    assert [m.name for m in adversarial.readouts(None)] == ["adversarial_classifier"]
    with pytest.raises(ConfigError, match="a segmentation run has no classifier to attack"):
        kinds.make_kind(baselines.get_config("unet,tiny"), mesh).readouts(None)


def test_readouts_run_in_inference_mode():
    """With dropout in D and G's head, the attacked logits are deterministic and equal train=False outputs
    (train=True would need a dropout key and differ from call to call)."""
    import jax

    config = cracks.get_config("tiny")
    config.discriminator.dropout = 0.5
    kind = kinds.make_kind(config, parallel.make_mesh())
    models = kind.models
    images = jax.random.uniform(jax.random.PRNGKey(0), (4, 32, 32, 3))
    d_params = models.discriminator.init(jax.random.PRNGKey(1), images)["params"]
    g_params = models.generator.init(jax.random.PRNGKey(2), images, np.zeros(4, np.int32))["params"]
    d, g_head = kind.readouts((g_params, d_params))
    np.testing.assert_array_equal(d.apply_fn(d.params, images), d.apply_fn(d.params, images))
    np.testing.assert_array_equal(d.apply_fn(d.params, images),
                                  models.discriminator.apply({"params": d_params}, images, train=False))
    dropped = models.discriminator.apply({"params": d_params}, images, train=True,
                                         rngs={"dropout": jax.random.PRNGKey(3)})
    assert not np.allclose(dropped, d.apply_fn(d.params, images))
    np.testing.assert_array_equal(g_head.apply_fn(g_head.params, images), g_head.apply_fn(g_head.params, images))


@pytest.mark.slow
def test_attack_errors_name_the_workdir_or_field(runs, tmp_path):
    gan, gan_dir, _, classifier_dir = runs
    with pytest.raises(CheckpointError, match="--transfer_from=.*: no checkpoint in"):
        attack(gan, gan_dir, transfer_from=str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()
    three = cracks.get_config("tiny")
    three.num_classes = 3
    with pytest.raises(ConfigError, match="config.num_classes=2 differs from this run's 3"):
        attack(three, gan_dir, transfer_from=classifier_dir)
    gan = gan.copy_and_resolve_references()
    gan.attack.models = ("classifier",)
    with pytest.raises(ConfigError, match="this run has no 'classifier'; it holds \\('D', 'G_head'\\)"):
        attack(gan, gan_dir)
