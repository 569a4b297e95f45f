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


def _finished_run(workdir, analysis: dict, results: dict) -> None:
    """A run folder as training and `--mode=explain` leave it (only the files the harness reads)."""
    (workdir / "explain").mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps(results))
    (workdir / "explain" / "explain.json").write_text(json.dumps(analysis))


def test_a_recorded_analysis_is_read_on_a_machine_without_the_run(tmp_path):
    """The record keeps the analysis, results.json and the command with the runs folder made portable, so
    another machine (another runs folder) tabulates the run without training it."""
    analysis, results = {"methods": {"counterfactual": {"auroc": 0.9}}}, {"training_wall_time_s": 12.5}
    _finished_run(tmp_path / "here" / "sut_s0", analysis, results)
    records = str(tmp_path / "results" / "runs")
    args = ["--config=configs/cracks.py:sut", "--config.seed=0"]
    with experiment_script("harness") as harness:
        here = harness.trained_and_analysed(args, str(tmp_path / "here" / "sut_s0"), "explain", train=False,
                                            records=records)
        assert here == analysis
        with open(os.path.join(records, "sut_s0", "explain.json")) as f:
            record = json.load(f)
        assert record["command"] == [*args, "--workdir={runs}/sut_s0", "--mode=explain"]
        elsewhere = str(tmp_path / "elsewhere" / "sut_s0")
        assert harness.trained_and_analysed(args, elsewhere, "explain", train=False, records=records) == analysis
        assert harness.training_results(elsewhere, records) == results
        assert not os.path.exists(elsewhere)  # read, not trained
        assert harness.trained_and_analysed(args, elsewhere, "explain", train=False) is None  # no records: not there
        assert harness.training_results(elsewhere) is None


def test_a_record_made_by_another_command_is_not_used(tmp_path, capsys):
    analysis = {"methods": {}}
    _finished_run(tmp_path / "here" / "sut_s0", analysis, {})
    records = str(tmp_path / "runs_records")
    with experiment_script("harness") as harness:
        harness.trained_and_analysed(["--config.seed=0"], str(tmp_path / "here" / "sut_s0"), "explain",
                                     train=False, records=records)
        elsewhere = str(tmp_path / "elsewhere" / "sut_s0")
        assert harness.trained_and_analysed(["--config.seed=1"], elsewhere, "explain", train=False,
                                            records=records) is None
        assert "was made by another command: --config.seed=0" in capsys.readouterr().out
        # Another analysis of the same run (another output folder) has no record either.
        assert harness.trained_and_analysed(["--config.seed=0"], elsewhere, "explain", train=False, records=records,
                                            output="explain_crack_segmentation_uav75") is None


@pytest.mark.subprocess
def test_a_record_made_with_other_saliency_settings_is_stale(tmp_path, capsys):
    """The record's settings are compared with what the command resolves today, as a local analysis's are."""
    args = ["--config=configs/cracks.py:tiny", "--config.seed=0"]
    analysis = {"settings": {"saliency": {"views": "identity"}}, "methods": {}}
    _finished_run(tmp_path / "here" / "tiny_s0", analysis, {})
    records = str(tmp_path / "records")
    with experiment_script("harness") as harness:
        folder = os.path.join(records, "tiny_s0")
        os.makedirs(folder)
        with open(os.path.join(folder, "explain.json"), "w") as f:
            json.dump({"command": [*args, "--workdir={runs}/tiny_s0", "--mode=explain"], "results": {},
                       "analysis": analysis}, f)
        elsewhere = str(tmp_path / "elsewhere" / "tiny_s0")
        assert harness.trained_and_analysed(args, elsewhere, "explain", train=False, records=records) is None
        assert "is stale: its saliency settings differ from today's in views" in capsys.readouterr().out
