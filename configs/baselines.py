"""The baselines the counterfactual masks and D are measured against, trained on the same data with
the same backbones and budgets as the GAN they mirror (configs/cracks.py, or configs/fruits.py):

    python -m cfjax.main --config=configs/baselines.py:classifier         # plain classifier: D's backbone, K outputs
    python -m cfjax.main --config=configs/baselines.py:unet               # supervised U-Net: G's architecture, masks
    python -m cfjax.main --config=configs/baselines.py:unet,sut           # ... on SUT-Crack patches (prepare it first)
    python -m cfjax.main --config=configs/baselines.py:classifier,fruits  # plain classifier on the fruit task
    python -m cfjax.main --config=configs/baselines.py:adversarial,fruits # PGD-trained classifier (Madry et al.)
    python -m cfjax.main --config=configs/baselines.py:classifier,tiny    # seconds: tests

The argument is MODEL[,TASK][,VARIANT]: VARIANT is one of the mirrored GAN config's variants.
Attribution maps and U-Net masks are scored by `--mode=explain`, robustness by `--mode=attack`.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # loaded by path: find its neighbours
import cracks  # noqa: E402  (the GAN configs the baselines mirror)
import fruits  # noqa: E402
from common import parse_arg, pgd_training  # noqa: E402

BASELINES = {"classifier": "classifier", "unet": "segmenter", "adversarial": "classifier"}
TASKS = {"cracks": cracks, "fruits": fruits}
# Each task's own variants (each file checks its own); "default" first.
VARIANTS = tuple(dict.fromkeys(cracks.VARIANTS + fruits.VARIANTS))


def get_config(arg: str = "classifier") -> ml_collections.ConfigDict:
    """`arg` is MODEL[,TASK][,VARIANT]: the GAN's config for TASK (cracks by default) and VARIANT, with
    `model` switched (and PGD training on for `adversarial`)."""
    parsed = parse_arg(arg, {"model": tuple(BASELINES), "task": tuple(TASKS), "variant": VARIANTS})
    baseline = parsed["model"]
    config = TASKS[parsed["task"]].get_config(parsed["variant"])
    config.model = BASELINES[baseline]
    config.name = f"{config.name}_{baseline}"
    if baseline == "adversarial":
        pgd_training(config)  # L-inf PGD-7 at 4/255, epsilon ramped over the first third (configs/common.py)
    return config
