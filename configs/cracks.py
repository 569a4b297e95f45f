"""Counterfactual GAN on the embedded synthetic crack dataset.

    python -m cfjax.main --config=configs/cracks.py              # laptop / 2-core CPU, <= 15 min
    python -m cfjax.main --config=configs/cracks.py:tiny         # seconds: smoke tests and CI
    python -m cfjax.main --config=configs/cracks.py:accelerator  # GPU / TPU: 128 px, wider, longer
    python -m cfjax.main --config=configs/cracks.py:sut          # real cracks (prepare SUT-Crack first)
    python -m cfjax.main --config=configs/cracks.py:sut,robust   # ... with the robust GAN (D trained on PGD examples)
    python -m cfjax.main --config=configs/cracks.py:sut,detector # ... whose D also learns PGD examples as fake

Any field can be overridden with --config.FIELD=VALUE (e.g. --config.num_steps=500).
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # loaded by path: find common.py beside it
from common import base_config, grow_to_accelerator, parse_arg, robust_gan, shrink_to_tiny  # noqa: E402

# The GAN, the robust GAN whose D trains on PGD examples (after the variant: `:robust`, `:tiny,robust`), or the
# robust GAN whose D also learns them as fake, a detector (`:detector`).
MODELS = ("gan", "robust", "detector")
VARIANTS = ("default", "tiny", "accelerator", "sut")


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    """The default is sized for a 2-core CPU; `variant` shrinks or grows the run, or picks real data."""
    parsed = parse_arg(variant, {"variant": VARIANTS, "model": MODELS})
    variant = parsed["variant"]
    config = base_config("cracks" if variant == "default" else f"cracks_{variant}")
    if variant == "tiny":
        shrink_to_tiny(config)
    elif variant == "accelerator":
        grow_to_accelerator(config)
    elif variant == "sut":
        # 64 px patches of SUT-Crack photos; prepare once with
        #   python -m cfjax.data.prepare --dataset=crack_segmentation/sut --manual_dir=../shared/data/sut_crack_seg
        config.data.name = "crack_segmentation/sut"
        # Masks from max_c |x - x_hat| blurred by a 3x3 box: the best of 9 variants on SUT-Crack's validation
        # patches (experiments/mask_variants.py; only evaluation and explanation read these fields).
        config.saliency.reduce = "max"
        config.saliency.blur_radius = 1
    if parsed["model"] in ("robust", "detector"):
        robust_gan(config, detector=parsed["model"] == "detector")
    return config
