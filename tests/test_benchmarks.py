"""The performance benchmark runs end to end at a tiny size and writes what README's table is made of
(marked perf: a whole benchmark script in a subprocess). Its figures are measured by running it, never
asserted here: a timed test would be flaky and prove nothing. The profiler's reading of a compiled
program's HLO is a correctness check, fast and unmarked."""

import json
import subprocess
import sys

import pytest


@pytest.mark.perf
@pytest.mark.slow
@pytest.mark.subprocess
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
        if devices == "2":  # the default device count also times the accelerator switches against fp32
            assert set(row["switches"]) == {"default", "remat", "bfloat16"}
            assert all(timing["ratio_to_default"] > 0 for timing in row["switches"].values())
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
    assert "GAN step" in table and "PGD-10 on D" in table and "MFU" in table and "remat" in table


@pytest.mark.perf
@pytest.mark.slow
@pytest.mark.subprocess
def test_the_worker_times_named_variants_against_the_default_step(repo_root):
    """--switch NAME:FIELD=VALUE,...: those variants replace the accelerator switches, each a GAN step with its
    fields changed, alternating with the default; a malformed one is refused by argparse. (Run with the
    --malloc setting that was tried and not kept, so that it stays runnable.)"""
    worker = str(repo_root / "experiments" / "benchmarks" / "perf_worker.py")
    command = [sys.executable, worker, "--task=speed", "--tiny", "--sizes=16", "--repeats=1", "--no-peer",
               "--malloc=one_arena",
               "--switch=D without norm:discriminator.norm=none",
               "--switch=both layer:generator.norm=layer,discriminator.norm=layer"]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["malloc"] == "one_arena"
    switches = result["sizes"]["16"]["switches"]
    assert list(switches) == ["default", "D without norm", "both layer"]
    assert all(timing["ratio_to_default"] > 0 for timing in switches.values())
    bad = subprocess.run([*command[:2], "--task=speed", "--switch=no fields"], cwd=repo_root, capture_output=True,
                         text=True, timeout=300, check=False)
    assert bad.returncode == 2 and "expected NAME:FIELD=VALUE" in bad.stderr


def _profile_module(repo_root):
    sys.path.insert(0, str(repo_root / "experiments" / "benchmarks"))
    import profile_step

    return profile_step


def test_profiler_finds_each_convolution_direction_with_its_flops(repo_root, tmp_path):
    """A 3x3 convolution and both its gradients, data-parallel on two devices and traced: each executed
    convolution is found in the HLO, put in its direction's category and given the whole batch's
    2 x B x H x W x Cin x Cout x 9 FLOPs (each device's share, once per device)."""
    import jax
    import jax.numpy as jnp

    from cfjax import parallel

    profile_step = _profile_module(repo_root)
    b, h, w, cin, cout = 4, 8, 8, 3, 5

    def loss(x, kernel):
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (y**2).sum()

    mesh = parallel.make_mesh(jax.devices()[:2])
    x = jax.device_put(jnp.ones((b, h, w, cin)), parallel.batch_sharding(mesh))
    kernel = jax.device_put(jnp.ones((3, 3, cin, cout)), parallel.replicated(mesh))
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).compile()
    call = lambda: jax.block_until_ready(compiled(x, kernel))
    call()
    result = profile_step.profile(call, compiled.as_text(), calls=2, trace_dir=str(tmp_path))
    expected = 2.0 * b * h * w * cin * cout * 9
    for direction in ("conv forward", "conv input gradient", "conv kernel gradient"):
        group = result["categories"][direction]
        assert group["operations"] == 1, (direction, result["categories"])
        assert group["flops"] == expected and group["seconds"] > 0
    assert 0 < result["operation_s_per_call"] and result["wall_s_per_call"] > 0


@pytest.mark.perf
@pytest.mark.slow
@pytest.mark.subprocess
def test_accelerator_benchmark_runs_on_cpu_at_a_tiny_size(repo_root, tmp_path):
    """The script prepared for a GPU or TPU runs here end to end: both dtypes, PGD, the training run."""
    command = [sys.executable, str(repo_root / "experiments" / "benchmarks" / "accelerator.py"), "--tiny",
               "--repeats=1", "--train_steps=4", f"--out={tmp_path}"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "accelerator.json").read_text())
    assert result["backend"] == "cpu" and set(result["dtypes"]) == {"float32", "bfloat16"}
    for row in result["dtypes"].values():
        for workload in ("gan_step", "pgd10"):
            assert row[workload]["flops"] > 0 and row[workload]["median_s"] > 0
            assert 0 < row[workload]["mfu_measured_peak"] and row[workload]["mfu_spec_peak"] is None  # no CPU sheet
        assert row["device_memory"] is None  # the CPU backend keeps no allocator statistics
    losses = result["training"]["losses"]
    assert [entry["step"] for entry in losses] == [1, 2, 3, 4] and all(entry["train/d_loss"] > 0 for entry in losses)
    assert "GAN step | bfloat16" in (tmp_path / "accelerator.md").read_text()

    # A device that miscounts (a GPU's compiled program hides convolutions in cuDNN calls): --recount
    # counts again here and recomputes the rates from the times the device measured.
    miscounted = json.loads(json.dumps(result))
    for row in miscounted["dtypes"].values():
        row["gan_step"]["flops"] = row["gan_step"]["tflops"] = 1.0
    (tmp_path / "device.json").write_text(json.dumps(miscounted))
    recount = [*command[:2], "--recount=" + str(tmp_path / "device.json"), f"--out={tmp_path / 'recounted'}"]
    proc = subprocess.run(recount, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recounted = json.loads((tmp_path / "recounted" / "accelerator.json").read_text())
    for dtype, row in recounted["dtypes"].items():
        for workload in ("gan_step", "pgd10"):
            fresh, again = result["dtypes"][dtype][workload], row[workload]
            assert again["flops"] == pytest.approx(fresh["flops"]) and again["median_s"] == fresh["median_s"]
            assert again["tflops"] == pytest.approx(again["flops"] / again["median_s"] / 1e12)
    assert "recounted on cpu" in (tmp_path / "recounted" / "accelerator.md").read_text()


def test_pgd_flops_are_counted_on_the_unrolled_program_whichever_loop_runs(repo_root):
    """XLA counts a rolled loop's body once; the count must not depend on how this backend runs the loop."""
    sys.path.insert(0, str(repo_root / "experiments" / "benchmarks"))
    import perf_worker

    config = perf_worker.make_config(32, True, ())
    images, labels = perf_worker.fixed_batch(config)
    _, state, batch = perf_worker.lower_gan_step(config, images, labels)
    counts = [perf_worker.lower_pgd(config, batch["image"], batch["label"], state.d_params, unroll=unroll)[-1]
              for unroll in (True, False)]
    assert counts[0] == counts[1] > 0
    rolled = perf_worker.lower_pgd(config, batch["image"], batch["label"], state.d_params, unroll=False)[1]
    assert perf_worker.program_flops(rolled) < counts[0] / 2  # what the count would be without unrolling


def test_accelerator_benchmark_knows_each_devices_data_sheet_peak(repo_root):
    sys.path.insert(0, str(repo_root / "experiments" / "benchmarks"))
    import accelerator

    assert accelerator.spec_peak("NVIDIA H200", "bfloat16") == 989.0
    assert accelerator.spec_peak("TPU v5p", "bfloat16") == 459.0  # not v5 lite's
    assert accelerator.spec_peak("TPU v5 lite", "bfloat16") == 197.0
    assert accelerator.spec_peak("TPU v4", "float32") is None  # no fp32 figure on the sheet: MFU left out
    assert accelerator.spec_peak("cpu", "float32") is None


def test_the_fused_norm_benchmark_computes_the_same_gradients_as_autodiff(repo_root):
    """The custom_vjp it times is the same function: equal gradients for x, scale and bias."""
    import numpy as np

    sys.path.insert(0, str(repo_root / "experiments" / "benchmarks"))
    import fused_norm

    for shape, groups in (((2, 6, 5, 12), 3), ((2, 4, 4, 16), 8)):
        fused, arguments = fused_norm.gradient_fn(fused_norm.fused(), shape, groups)
        autodiff, _ = fused_norm.gradient_fn(fused_norm.reference, shape, groups)
        for mine, theirs in zip(fused(*arguments), autodiff(*arguments)):
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)
