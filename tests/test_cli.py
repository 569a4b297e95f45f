"""The command line, run as a user runs it: end to end on the tiny config, and its error messages."""

import json
import os
import subprocess
import sys

import pytest

# Trains, explains and attacks through `python -m cfjax.main` processes.
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def _run(args, repo_root, **env):
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "cfjax.main", *args], cwd=repo_root, env=environment,
        capture_output=True, text=True, timeout=600,
    )


def test_cli_trains_end_to_end(tmp_path, repo_root):
    workdir = tmp_path / "run"
    proc = _run(["--config=configs/cracks.py:tiny", f"--workdir={workdir}", "--config.num_steps=4"], repo_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results:" in proc.stdout and str(workdir) in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["step"] == 4
    assert (workdir / "checkpoints" / "4").is_dir()
    # The same command on a finished workdir trains nothing and returns the saved results.
    log_before = (workdir / "metrics.jsonl").read_text()
    again = _run(["--config=configs/cracks.py:tiny", f"--workdir={workdir}", "--config.num_steps=4"], repo_root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished step 4" in again.stdout
    assert (workdir / "metrics.jsonl").read_text() == log_before
    assert json.loads((workdir / "results.json").read_text()) == results
    # --mode=explain restores the run with its saved config (no --config needed) and scores its masks;
    # a bad folder is one clear line, exit 2.
    explained = _run([f"--workdir={workdir}", "--mode=explain"], repo_root)
    assert explained.returncode == 0, explained.stderr[-3000:]
    assert "| counterfactual |" in explained.stdout
    assert json.loads((workdir / "explain" / "explain.json").read_text())["step"] == 4
    missing = _run(["--config=configs/cracks.py:tiny", f"--workdir={workdir}", "--mode=explain",
                    f"--folder={tmp_path / 'nowhere'}"], repo_root)
    assert missing.returncode == 2
    assert f"cfjax: error: the folder to explain, '{tmp_path / 'nowhere'}', does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    # --mode=attack (its sweeps are tested through `attack()` in test_robustness.py and the analysis
    # notebook): a missing transfer source is one line, before any attack compiles.
    no_source = _run(["--config=configs/cracks.py:tiny", f"--workdir={workdir}", "--mode=attack",
                      f"--transfer_from={tmp_path / 'nowhere'}"], repo_root)
    assert no_source.returncode == 2 and "--transfer_from=" in no_source.stderr
    assert "Traceback" not in no_source.stderr
    # --print_config on a trained run: its saved config, with the command line's evaluation sections
    # only; a structural difference is refused, naming the field.
    saved = _run([f"--workdir={workdir}", "--mode=attack", "--print_config"], repo_root)
    assert saved.returncode == 0, saved.stderr[-3000:]
    assert "name: cracks_tiny" in saved.stdout and "num_steps: 4" in saved.stdout
    evaluated = _run(["--config=configs/cracks.py:tiny", f"--workdir={workdir}", "--mode=explain", "--print_config",
                      "--config.saliency.reduce=max", "--config.num_steps=100"], repo_root)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "reduce: max" in evaluated.stdout and "num_steps: 4" in evaluated.stdout  # the run trained 4 steps
    other = _run(["--config=configs/cracks.py:tiny", f"--workdir={workdir}", "--mode=explain", "--print_config",
                  "--config.generator.width=16"], repo_root)
    assert other.returncode == 2 and "generator.width: checkpoint has 8, config has 16" in other.stderr


def test_print_config_prints_the_resolved_config_and_does_nothing_else(tmp_path, repo_root):
    workdir = tmp_path / "run"
    proc = _run(["--config=configs/baselines.py:adversarial,tiny", f"--workdir={workdir}", "--print_config",
                 "--config.num_steps=900", "--config.adversarial_training.epsilon=0.03137254901960784"], repo_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warmup_steps: 300" in proc.stdout  # follows num_steps
    assert f"step_size: {0.03137254901960784 * 2.5 / 7}" in proc.stdout  # follows epsilon (8/255)
    assert not workdir.exists()


def test_config_is_required_to_train(repo_root):
    proc = _run(["--workdir=nowhere"], repo_root)
    assert proc.returncode == 2 and "--config is required to train" in proc.stderr
    proc = _run(["--mode=explain"], repo_root)
    assert proc.returncode == 2 and "--mode=explain without --config needs --workdir" in proc.stderr
    proc = _run(["--mode=explain", "--workdir=nowhere", "--split=validation"], repo_root)
    assert proc.returncode == 2 and "--split is for --mode=attack" in proc.stderr
    proc = _run(["--mode=explain", "--workdir=nowhere", "--saliency_threshold=0.1"], repo_root)
    assert proc.returncode == 2 and "--saliency_threshold is for --mode=predict" in proc.stderr


# Bad flags and config fields, one line each with exit code 2: tests/test_bad_input.py (the table in
# docs/reliability.md).
