"""The performance benchmark runs end to end at a tiny size and writes what README's table is made of.
(Its figures are measured by running it, never asserted here: a timed test would be flaky and prove nothing.)"""

import json
import subprocess
import sys


def test_performance_benchmark_runs_at_a_tiny_size_and_writes_its_json(repo_root, tmp_path):
    command = [sys.executable, str(repo_root / "experiments" / "benchmarks" / "performance.py"), "--tiny",
               "--sizes=16", "--devices=1,2", "--repeats=1", "--no-torch-compile",
               "--memory-workloads=gan", f"--out={tmp_path}"]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "performance.json").read_text())
    assert set(result["speed"]) == {"1", "2"}
    for devices, speed in result["speed"].items():
        assert speed["devices"] == int(devices) and speed["peak"]["gflops"] > 0
        row = speed["sizes"]["16"]
        assert row["gan_step_flops"] > 0 and row["pgd10_flops"] > 0
        assert row["gan_step"]["cfjax"]["median_s"] > 0 and row["pgd10"]["cfjax"]["median_s"] > 0
        assert set(row["sync_cost_s_per_step"]) == {"sync_every_step", "sync_at_end"}
        if speed["peer_ran"]:  # torch installed, in the process with the most devices
            assert {"torch_eager", "torchattacks"} <= set(row["pgd10"]) and "torch_eager" in row["gan_step"]
    # Data-parallel work is the same work: the sharded FLOPs do not depend on the device count. Only the
    # replicated update (Adam, EMA, norms) is counted once per device: 6 % more on 2 devices at this tiny size.
    one, two = (result["speed"][d]["sizes"]["16"]["gan_step_flops"] for d in ("1", "2"))
    assert 1.0 <= two / one < 1.15
    compiles = [m for m in result["memory"] if m["framework"] == "jax"]
    assert {m["compile_cache"] for m in compiles} == {"cold", "warm"}
    assert all(m["peak_rss_mb"] > 0 for m in compiles)
    table = (tmp_path / "performance.md").read_text()
    assert "GAN step" in table and "PGD-10 on D" in table and "MFU" in table
