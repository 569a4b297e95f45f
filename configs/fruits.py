"""Counterfactual GAN on fresh vs rotten fruit (the paper's robustness task: healthy vs defective apples).

Prepare the photos once (the shipped train/test folders are pooled and re-split by base photo):

    python -m cfjax.data.prepare --dataset=fruit_defects/apples --manual_dir=../shared/data/fruits_fresh_rotten_224
    python -m cfjax.main --config=configs/fruits.py              # 2-core CPU, ~15 min
    python -m cfjax.main --config=configs/fruits.py:tiny         # seconds
    python -m cfjax.main --config=configs/fruits.py:accelerator  # GPU / TPU, 128 px
    python -m cfjax.main --config=configs/fruits.py:all          # all three fruits, healthy vs defective
    python -m cfjax.main --config=configs/fruits.py:robust       # the robust GAN: D trained on PGD examples
    python -m cfjax.main --config=configs/fruits.py:tiny,robust  # ... in seconds
    python -m cfjax.main --config=configs/fruits.py:detector     # ... whose D also learns PGD examples as fake

Photos are resized from 224 px; the counterfactual shows what would make a rotten apple healthy.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # loaded by path: find common.py beside it
from common import base_config, grow_to_accelerator, parse_arg, robust_gan, shrink_to_tiny  # noqa: E402

# The GAN, the robust GAN whose D trains on PGD examples (after the variant: `:robust`, `:tiny,robust`), or the
# robust GAN whose D also learns them as fake, a detector (`:detector`).
MODELS = ("gan", "robust", "detector")
VARIANTS = ("default", "tiny", "accelerator", "all")


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    """Apples at 64 px on a CPU by default; `variant` shrinks, grows, or takes every fruit."""
    parsed = parse_arg(variant, {"variant": VARIANTS, "model": MODELS})
    variant = parsed["variant"]
    config = base_config("fruits" if variant == "default" else f"fruits_{variant}")
    config.data.name = "fruit_defects/apples"
    # Colour is the evidence of rot; mild jitter keeps D from keying on one photo session's white balance.
    config.data.colour_jitter = 0.05
    config.num_steps = 3000
    config.image_every = 500
    config.eval_every = 500
    if variant == "tiny":
        shrink_to_tiny(config)
    elif variant == "accelerator":
        grow_to_accelerator(config)
    elif variant == "all":
        config.data.name = "fruit_defects/all"
    if parsed["model"] in ("robust", "detector"):
        robust_gan(config, detector=parsed["model"] == "detector")
    return config
