"""experiments/harness.py: an analysis on disk is reused only while it is what the command gives today."""

import json
import os

import pytest
from conftest import experiment_script


def test_one_section_of_the_printed_config_is_read_at_one_level():
    printed = "model: gan\nsaliency:\n  blur_radius: 1\n  reduce: max\n  nested:\n    deep: 3\nseed: 0\n"
    with experiment_script("harness") as harness:
        assert harness.config_section(printed, "saliency") == {"blur_radius": "1", "reduce": "max"}
        assert harness.config_section(printed, "attack") == {}


def test_a_mean_over_seeds_says_when_it_leaves_seeds_out():
    with experiment_script("harness") as harness:
        whole = harness.mean_std([0.8, 0.9, 1.0])
        assert whole == pytest.approx((0.9, 0.1)) and harness.seeds_note(whole) == ""
        partial = harness.mean_std([0.8, None, float("nan")])  # a record older than the field, a NaN
        assert partial == (0.8, 0.0) and harness.seeds_note(partial) == " (1 of 3 seeds)"
        assert harness.mean_std([None, None]) is None
        assert json.loads(json.dumps({"v": whole})) == {"v": list(whole)}  # results files keep (mean, std)


def test_the_robust_gan_aims_are_met_only_at_the_mean_of_every_seed():
    def model(accuracy, auroc):
        rows = [{"group": "ensemble", "epsilon": 4 / 255, "accuracy": accuracy},
                {"group": "reference", "epsilon": 4 / 255, "accuracy": accuracy,
                 "auroc_p_fake_clean_vs_adversarial": auroc}]
        return {"clean": {"accuracy": accuracy}, "sweeps": rows, "checks": []}

    with experiment_script("harness") as harness, experiment_script("robust_gan") as robust_gan:
        fruit = {"robust GAN: D": [model(0.90, 0.95)], "PGD-trained classifier (L∞ 4/255)": [model(0.90, 0.5)],
                 "plain classifier": [model(0.91, 0.5)]}
        masks = {"counterfactual": {"iou_tuned": harness.mean_std([0.52])},
                 "robust_gan/counterfactual": {"iou_tuned": harness.mean_std([0.53])}}
        one_seed = "\n".join(robust_gan.aims(fruit, masks, num_seeds=1))
        assert "One model meeting every aim: robust GAN: D" in one_seed and "seeds)" not in one_seed
        three_seeds = "\n".join(robust_gan.aims(fruit, masks, num_seeds=3))  # seeds 1 and 2 not finished
        assert "0.900 (1 of 3 seeds) vs 0.900 (1 of 3 seeds): met so far (not every seed has it)" in three_seeds
        assert "One model meeting every aim: none (yet)" in three_seeds


def test_the_ablation_grid_runs_each_setting_at_each_seed_in_its_own_folder(monkeypatch):
    """--ablation_seeds: one run folder and one --config.seed per (setting, seed); a seed not finished (nothing
    trained, no --train) is left out of the setting's results instead of failing the table."""
    called, attacked = [], []

    def attack_runs(seeds, *_, only, **__):
        attacked.append((seeds, only))
        return {}, {}

    def trained_and_analysed(args, workdir, mode, **_):
        called.append((os.path.basename(workdir), [a for a in args if a.startswith("--config.seed=")]))
        return None if workdir.endswith("_s2") else {"models": {"D": {"seed_folder": workdir}}, "settings": {}}

    with experiment_script("harness") as harness, experiment_script("robust_gan") as robust_gan:
        monkeypatch.setattr(robust_gan.robustness_table, "attack_runs", attack_runs)
        monkeypatch.setattr(harness, "trained_and_analysed", trained_and_analysed)
        grid, flags, _ = robust_gan.ablation(["fake_weight_0"], [0, 1, 2], "runs", False, [], None)
        called_before = len(called)
        _, longer, _ = robust_gan.ablation(["steps_x3"], [0], "runs", False, ["--config.num_steps=6"], None)
    assert attacked[0] == ([0, 1, 2], ("classifier", "gan"))  # the default row: the plain GAN of every seed
    assert called[:called_before] == [(f"fruits_ablation_fake_weight_0_s{seed}", [f"--config.seed={seed}"])
                                      for seed in (0, 1, 2)]
    assert [model["seed"] for model in grid["fake_weight_0"]] == [0, 1]
    assert [model["seed_folder"] for model in grid["fake_weight_0"]] == [
        os.path.join("runs", f"fruits_ablation_fake_weight_0_s{seed}") for seed in (0, 1)]
    assert flags["fake_weight_0"] == ["--config.loss.fake_weight=0.0"]
    # steps_x3 is three times the steps the run would train, read from its config with every flag given:
    assert longer["steps_x3"] == ["--config.num_steps=18"]
    assert called[called_before:] == [("fruits_ablation_steps_x3_s0", ["--config.seed=0"])]


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_explanation_made_with_other_saliency_settings_is_made_again(tmp_path):
    workdir = str(tmp_path / "run")
    args = ["--config=configs/cracks.py:tiny", "--config.num_steps=6"]
    output = os.path.join(workdir, "explain", "explain.json")
    with experiment_script("harness") as harness:
        first = harness.trained_and_analysed([*args, "--config.saliency.views=identity"], workdir, "explain",
                                             train=True)
        assert first["settings"]["saliency"]["views"] == "identity"
        made = os.stat(output).st_mtime_ns
        again = harness.trained_and_analysed([*args, "--config.saliency.views=identity"], workdir, "explain",
                                             train=True)
        assert os.stat(output).st_mtime_ns == made and again == first  # the same settings: reused
        today = harness.trained_and_analysed(args, workdir, "explain", train=True)  # the default views
        assert today["settings"]["saliency"]["views"] == "dihedral"
        with open(output) as f:
            assert json.load(f)["settings"]["saliency"]["views"] == "dihedral"


def test_an_explanation_whose_maps_use_no_saliency_setting_is_never_stale():
    """A classifier's or U-Net's explain.json records no saliency setting: nothing to compare, no re-run
    (and no config to resolve: the check returns before it starts a process)."""
    with experiment_script("harness") as harness:
        assert harness._stale_settings({"settings": {"saliency": {}}}, ["--config=does/not/exist.py"]) is None


def _finished_run(workdir, config_flags: list[str], analysis: dict, results: dict) -> None:
    """A run folder as training and `--mode=explain` leave it (only the files the harness reads), its saved
    config the one `config_flags` resolve to."""
    (workdir / "explain").mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps(results))
    (workdir / "explain" / "explain.json").write_text(json.dumps(analysis))
    with experiment_script("harness") as harness:
        (workdir / "config.json").write_text(json.dumps(harness.resolved_config(config_flags)))


TINY = ["--config=configs/cracks.py:tiny", "--config.seed=0"]


@pytest.mark.subprocess
def test_a_recorded_analysis_is_read_on_a_machine_without_the_run(tmp_path):
    """The record keeps the analysis, results.json and the config the analysis ran with, so another machine
    (another runs folder) tabulates the run without training it, also from a command that resolves to the
    same config by other flags."""
    analysis, results = {"methods": {"counterfactual": {"auroc": 0.9}}}, {"training_wall_time_s": 12.5}
    _finished_run(tmp_path / "here" / "tiny_s0", TINY, analysis, results)
    records = str(tmp_path / "results" / "runs")
    with experiment_script("harness") as harness:
        here = harness.trained_and_analysed(TINY, str(tmp_path / "here" / "tiny_s0"), "explain", train=False,
                                            records=records)
        assert here == analysis
        with open(os.path.join(records, "tiny_s0", "explain.json")) as f:
            record = json.load(f)
        assert record["config"]["seed"] == 0 and record["results"] == results and record["flags"] == []
        elsewhere = str(tmp_path / "elsewhere" / "tiny_s0")
        same_run = [*TINY, "--config.log_every=7"]  # a field a resumed run may change too
        assert harness.trained_and_analysed(same_run, elsewhere, "explain", train=False, records=records) == analysis
        assert harness.training_results(elsewhere, records) == results
        assert not os.path.exists(elsewhere)  # read, not trained
        assert harness.trained_and_analysed(TINY, elsewhere, "explain", train=False) is None  # no records given
        assert harness.training_results(elsewhere) is None


@pytest.mark.subprocess
def test_a_record_of_another_run_or_analysis_is_not_used(tmp_path, capsys):
    _finished_run(tmp_path / "here" / "tiny_s0", TINY, {"methods": {}}, {})
    records = str(tmp_path / "records")
    elsewhere = str(tmp_path / "elsewhere" / "tiny_s0")
    with experiment_script("harness") as harness:
        harness.trained_and_analysed(TINY, str(tmp_path / "here" / "tiny_s0"), "explain", train=False,
                                     records=records)
        capsys.readouterr()
        another_seed = ["--config=configs/cracks.py:tiny", "--config.seed=1"]
        assert harness.trained_and_analysed(another_seed, elsewhere, "explain", train=False, records=records) is None
        assert "seed: record has 0, command has 1" in capsys.readouterr().out
        other_views = [*TINY, "--config.saliency.views=identity"]  # the same run, another analysis
        assert harness.trained_and_analysed(other_views, elsewhere, "explain", train=False, records=records) is None
        assert "saliency.views: record has 'dihedral', command has 'identity'" in capsys.readouterr().out
        transfer = ("--transfer_from=" + str(tmp_path / "elsewhere" / "classifier"),)
        assert harness.trained_and_analysed(TINY, elsewhere, "explain", train=False, records=records,
                                            mode_args=transfer) is None
        assert "flags: record has ''" in capsys.readouterr().out
        # Another analysis of the same run (another output folder) has no record.
        assert harness.trained_and_analysed(TINY, elsewhere, "explain", train=False, records=records,
                                            output="explain_crack_segmentation_uav75") is None


@pytest.mark.subprocess
def test_flags_naming_runs_compare_across_runs_folders(tmp_path):
    """`--transfer_from=` names a run beside this one: recorded as {runs}/..., it matches in any runs folder."""
    _finished_run(tmp_path / "here" / "tiny_s0", TINY, {"methods": {}}, {})
    records = str(tmp_path / "records")
    with experiment_script("harness") as harness:
        here = ("--transfer_from=" + str(tmp_path / "here" / "tiny_classifier_s0"),)
        harness.trained_and_analysed(TINY, str(tmp_path / "here" / "tiny_s0"), "explain", train=False,
                                     records=records, mode_args=here)
        there = ("--transfer_from=" + str(tmp_path / "there" / "tiny_classifier_s0"),)
        assert harness.trained_and_analysed(TINY, str(tmp_path / "there" / "tiny_s0"), "explain", train=False,
                                            records=records, mode_args=there) == {"methods": {}}


def test_only_names_some_runs_of_a_table_and_refuses_an_unknown_one(capsys):
    import argparse
    runs = {"gan": None, "unet": None, "classifier": None}
    with experiment_script("harness") as harness:
        parser = argparse.ArgumentParser(prog="table")
        harness.add_only_flag(parser, runs)
        assert harness.only_runs(parser, parser.parse_args([]).only, runs) == ("gan", "unet", "classifier")
        assert harness.only_runs(parser, "unet,gan", runs) == ("unet", "gan")
        with pytest.raises(SystemExit):
            harness.only_runs(parser, "gan,robust", runs)
        assert "--only: unknown run 'robust'; choose from ('gan', 'unet', 'classifier')" in capsys.readouterr().err
