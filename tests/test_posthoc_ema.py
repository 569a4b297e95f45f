"""experiments/posthoc_ema.py: EMAs of G rebuilt from a run's raw snapshots, and the script on a tiny run."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, experiment_script


def test_snapshots_at_every_step_give_the_bias_corrected_ema_exactly():
    """With a snapshot after every update, Σ d^(T-t) θ_t normalised is the EMA recurrence started from zero
    and divided by 1 - d^T (Adam's bias correction): the golden value, computed step by step."""
    rng = np.random.default_rng(0)
    thetas = {t: {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=(2,))} for t in range(1, 41)}
    decay = 0.9
    ema = {"w": np.zeros((3, 2)), "b": np.zeros(2)}
    for t in range(1, 41):
        ema = {name: decay * ema[name] + (1 - decay) * thetas[t][name] for name in ema}
    with experiment_script("posthoc_ema") as script:
        rebuilt = script.snapshot_ema(thetas, decay, 40)
        for name in ema:
            np.testing.assert_allclose(rebuilt[name], ema[name] / (1 - decay ** 40), rtol=1e-12)
        # only the snapshots up to the step asked for count, and a decay near 0 keeps the last one
        np.testing.assert_allclose(script.snapshot_ema(thetas, 1e-9, 20)["w"], thetas[20]["w"], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_script_scores_every_decay_on_a_tiny_run_and_leaves_the_run_alone(tmp_path):
    workdir = tmp_path / "run"
    train = [sys.executable, "-m", "cfjax.main", "--config=configs/cracks.py:tiny", "--config.num_steps=24",
             "--config.checkpoint_every=2", "--config.keep_checkpoints=1000", "--config.ema_decay=0.9",
             f"--workdir={workdir}"]
    subprocess.run(train, cwd=REPO, check=True, capture_output=True, timeout=900)
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    out_file = tmp_path / "ema.json"
    proc = subprocess.run([sys.executable, "experiments/posthoc_ema.py", f"--workdir={workdir}",
                           "--decays=0.5,0.9", f"--out={out_file}"], cwd=REPO, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before  # the run is only read
    out = json.loads(out_file.read_text())
    assert out["step"] == 24 and out["snapshots"] == 12
    assert set(out["rows"]) == {"stored EMA", "raw G", "snapshots, decay 0.5", "snapshots, decay 0.9"}
    assert out["stored_vs_rebuilt_max_abs"] < 0.05  # the run's own decay, rebuilt from snapshots 2 steps apart
    for row in out["rows"].values():
        assert 0.0 <= row["test_iou_mean"] <= 1.0
    assert "| snapshots, decay 0.9 |" in proc.stdout
    for flag, message in (("--at=5", "has no checkpoint of that step"), ("--at=10", "too few checkpoints")):
        refused = subprocess.run([sys.executable, "experiments/posthoc_ema.py", f"--workdir={workdir}", flag],
                                 cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr[-2000:]
