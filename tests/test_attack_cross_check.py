"""cfjax's APGD-CE, FAB-T and ensemble agree with torchattacks on the same tiny network and images
(experiments/attack_cross_check.py's comparison). torch lives in its own environment: the test runs where
CFJAX_TORCH_PYTHON names a Python with torch, torchattacks and numpy (or this Python has them), and skips,
saying so, elsewhere."""

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
    network = ResNetClassifier(num_outputs=2, widths=(8, 16))
    images = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (NUM_IMAGES, 16, 16, 3)))
    params = network.init(jax.random.PRNGKey(1), images[:1])["params"]
    apply_fn = lambda p, x: network.apply({"params": p}, x)
    logits = np.asarray(apply_fn(params, images))
    labels = np.argmax(logits, -1).astype(np.int32)  # clean accuracy 1: every flip comes from the attack
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
        ours = script.cfjax_side(model, settings)
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
