"""cfjax's APGD-CE, FAB-T and ensemble agree with torchattacks on the same tiny network and images
(experiments/attack_cross_check.py's comparison). torch lives in its own environment: the test runs where
CFJAX_TORCH_PYTHON names a Python with torch, torchattacks and numpy (or this Python has them), and skips,
saying so, elsewhere."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import experiment_script

from cfjax.kinds import Readout
from cfjax.models import ResNetClassifier

NUM_IMAGES = 64


def _tiny_model():
    """A random tiny classifier, images and its own decisions as labels (clean accuracy 1)."""
    network = ResNetClassifier(num_outputs=2, widths=(8, 16))
    images = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (NUM_IMAGES, 16, 16, 3)))
    params = network.init(jax.random.PRNGKey(1), images[:1])["params"]
    apply_fn = lambda p, x: network.apply({"params": p}, x)
    logits = np.asarray(apply_fn(params, images))
    labels = np.argmax(logits, -1).astype(np.int32)  # clean accuracy 1: every flip comes from the attack
    return params, apply_fn, images, labels, logits


def test_an_interrupted_cross_check_resumes_without_rerunning_finished_attacks(tmp_path, monkeypatch):
    from cfjax import attacks

    params, apply_fn, images, labels, _ = _tiny_model()
    model = {"readout": Readout("classifier", apply_fn, params, 2), "images": images, "labels": labels,
             "num_classes": 2}
    settings = {"num_images": NUM_IMAGES, "epsilons": [2 / 255, 8 / 255], "iterations": 3, "targets": 1,
                "queries": 5, "square_seeds": [0], "model_key": "tiny@0"}
    progress = str(tmp_path / "cfjax_progress.json")
    made = attacks.make_ensemble
    calls = []

    def interrupted_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the session ends in the middle of the sweep
        calls.append(args[1].members)
        return made(*args, **kwargs)

    with experiment_script("attack_cross_check") as script:
        monkeypatch.setattr(attacks, "make_ensemble", interrupted_after_three)
        with pytest.raises(KeyboardInterrupt):
            script.cfjax_side(model, settings, progress)
        saved = json.load(open(progress))["robust"]
        assert sorted(saved) == ["apgd-ce", "fab-t", "square/seed0"] and all(len(v) == 1 for v in saved.values())
        monkeypatch.setattr(attacks, "make_ensemble", made)
        resumed = script.cfjax_side(model, settings, progress)
        first_budget = {name: flags for name, flags in resumed.items() if str(2 / 255) in flags}
        assert {name: flags[str(2 / 255)] for name, flags in first_budget.items() if name != "ensemble"} == {
            name: flags[str(2 / 255)] for name, flags in saved.items()}  # kept, not recomputed
        assert all(len(resumed[name]) == 2 for name in ("apgd-ce", "fab-t", "square/seed0", "ensemble"))
        # More budgets or Square seeds add to what is there: only the new ones run.
        ran = []

        def counted(apply_fn, spec, *args, **kwargs):
            attack = made(apply_fn, spec, *args, **kwargs)
            return lambda *a: ran.append((spec.members, round(float(a[-1]) * 255))) or attack(*a)

        monkeypatch.setattr(attacks, "make_ensemble", counted)
        more = script.cfjax_side(model, {**settings, "square_seeds": [0, 1], "epsilons": [8 / 255, 4 / 255]}, progress)
        assert sorted(ran) == [((), 4), (("apgd-ce",), 4), (("fab-t",), 4), (("square",), 4), (("square",), 4),
                               (("square",), 8)]  # 4/255 is new; at 8/255 only seed 1
        assert more["apgd-ce"][str(8 / 255)] == resumed["apgd-ce"][str(8 / 255)] and len(more["square/seed1"]) == 2
        # Another model (or other settings) starts over instead of mixing in flags of different weights.
        monkeypatch.setattr(attacks, "make_ensemble", interrupted_after_three)
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            script.cfjax_side(model, {**settings, "model_key": "tiny@100"}, progress)
        assert len(calls) == 3


def _torch_python() -> str:
    candidates = [os.environ.get("CFJAX_TORCH_PYTHON", ""), sys.executable]
    for python in filter(None, candidates):
        probe = subprocess.run([python, "-c", "import torch, torchattacks, numpy"], capture_output=True)
        if probe.returncode == 0:
            return python
    pytest.skip("no Python with torch and torchattacks: set CFJAX_TORCH_PYTHON (e.g. a venv with "
                "`pip install torch numpy scipy && pip install --no-deps torchattacks`)")


@pytest.mark.slow
@pytest.mark.subprocess
def test_cfjax_attacks_agree_with_torchattacks_on_a_tiny_network(tmp_path):
    torch_python = _torch_python()
    params, apply_fn, images, labels, logits = _tiny_model()
    settings = {"num_images": NUM_IMAGES, "epsilons": [0.5 / 255, 2 / 255, 8 / 255], "iterations": 20, "targets": 9,
                "queries": 300, "square_seeds": [0]}
    with experiment_script("attack_cross_check") as script:
        exported = str(tmp_path / "model.npz")
        script.write_export(exported, params, {"widths": [8, 16], "blocks_per_stage": 1, "norm": "group",
                                               "stem": "unshuffle", "dropout": 0.0, "num_outputs": 2,
                                               "num_classes": 2}, images, labels, logits)
        model = {"readout": Readout("classifier", apply_fn, params, 2), "images": images, "labels": labels,
                 "num_classes": 2}
        torch_result = script.start_torch_side(torch_python, exported, settings, str(tmp_path))
        ours = script.cfjax_side(model, settings, str(tmp_path / "cfjax_progress.json"))
        theirs = torch_result()
        rows = script.compare(ours, theirs["robust"], settings)
    assert theirs["max_logit_difference"] < 1e-4  # the same function in both frameworks
    accuracies = {(r["attack"], r["epsilon_255"]): (r["cfjax"], r["torchattacks"]) for r in rows}
    assert 0 < accuracies[("apgd-ce", 0.5)][0] and accuracies[("apgd-ce", 8)][0] < 1  # the budgets discriminate
    one_image = 1 / NUM_IMAGES
    for row in rows:
        if row["attack"].startswith("square"):
            continue  # random search with different random streams: compared by seed means in the script
        assert abs(row["cfjax"] - row["torchattacks"]) <= max(script.TOLERANCE, one_image) + 1e-9, row
