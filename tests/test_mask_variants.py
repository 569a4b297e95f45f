"""experiments/mask_variants.py: every reduction x blur x views variant scored on a run, and the run's own
settings reproduce what training scored."""

import json
import subprocess
import sys

import pytest

from cfjax.masks import maps

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_runs_own_settings_score_as_training_scored_them(tmp_path):
    workdir = tmp_path / "run"
    train = [sys.executable, "-m", "cfjax.main", "--config=configs/cracks.py:tiny", "--config.num_steps=12",
             f"--workdir={workdir}"]
    subprocess.run(train, cwd=REPO, check=True, capture_output=True, timeout=900)
    proc = subprocess.run([sys.executable, "experiments/mask_variants.py", str(workdir), f"--out={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "mask_variants.json").read_text())
    scored = out["runs"][str(workdir)]
    assert len(scored) == len(maps.REDUCTIONS) * 3 * len(maps.VIEWS)
    config = json.loads((workdir / "config.json").read_text())["saliency"]
    own = scored[f"{config['reduce']},{config['blur_radius']},{config['views']}"]
    trained = json.loads((workdir / "results.json").read_text())["test"]["iou_counterfactual"]
    assert own["test"] == pytest.approx(trained["iou_mean"], abs=1e-6)
    assert own["threshold"] == pytest.approx(trained["threshold"])
    assert out["chosen_on_validation"] in out["summary"]
    assert "| dihedral" in (tmp_path / "mask_variants.md").read_text()
