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


def test_an_explanation_whose_maps_use_no_saliency_setting_is_never_stale(tmp_path):
    """A classifier's or U-Net's explain.json records no saliency setting: nothing to compare, no re-run
    (and no config to resolve: the check returns before it starts a process)."""
    output = tmp_path / "explain.json"
    output.write_text(json.dumps({"settings": {"saliency": {}}}))
    with experiment_script("harness") as harness:
        assert harness._stale_settings(str(output), ["--config=does/not/exist.py"]) is None
