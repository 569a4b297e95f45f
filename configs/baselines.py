"""The baselines the counterfactual masks and D are measured against, trained on the same data with
the same backbones and budgets as the GAN of configs/cracks.py:

    python -m cfjax.main --config=configs/baselines.py:classifier      # plain classifier: D's backbone, K outputs
    python -m cfjax.main --config=configs/baselines.py:unet            # supervised U-Net: G's architecture, masks
    python -m cfjax.main --config=configs/baselines.py:unet,sut        # ... on SUT-Crack patches (prepare it first)
    python -m cfjax.main --config=configs/baselines.py:classifier,tiny # seconds: tests

The argument is MODEL[,VARIANT] with VARIANT one of configs/cracks.py's variants. Attribution maps
(Grad-CAM, gradients, integrated gradients) of the classifier and the U-Net's masks are scored by
`python -m cfjax.main --config=... --workdir=RUN --mode=explain`.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cracks  # the GAN config the baselines mirror

BASELINES = {"classifier": "classifier", "unet": "segmenter"}


def get_config(arg: str = "classifier") -> ml_collections.ConfigDict:
    """`arg` is MODEL or MODEL,VARIANT: the GAN's config for VARIANT, with `model` switched."""
    baseline, _, variant = (arg or "classifier").partition(",")
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {tuple(BASELINES)}")
    config = cracks.get_config(variant or "default")
    config.model = BASELINES[baseline]
    config.name = f"{config.name}_{baseline}"
    return config
