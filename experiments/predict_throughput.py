"""Photos per second of --mode=predict's per-photo work (docs/predicting.md#throughput).

    PYTHONPATH=. python experiments/predict_throughput.py --workdir=RUN [--sizes=480x320,4000x3000]
        [--views=identity,dihedral]

Restores the run (once per `saliency.views` setting asked for; by default the run's own), predicts one
warm-up photo of each size (compiles), then times `--count` photos of each size through
`cfjax.predict.run.predict_photo` (tiles, maps, mask, overlay, counterfactual, thumbnails and their
PNG/JPEG writes; reading is not included).
"""

import argparse
import os
import tempfile
import time

import jax
import numpy as np

import cfjax
from cfjax.predict import run as predict_run
from cfjax.saved_runs import saved_config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--sizes", default="480x320,4000x3000")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--views", default="", help="comma-separated saliency.views settings (default: the run's)")
    args = parser.parse_args()
    for views in args.views.split(",") if args.views else [None]:
        config = saved_config(args.workdir)
        if views:
            config.saliency.views = views
        time_photos(cfjax.restore(args.workdir, config=config), args)


def time_photos(run, args) -> None:
    """Print the seconds per photo of each size for one restored run."""
    methods = tuple(m for m in predict_run.METHODS if m in run.offers)
    abstain, mask = {"score": None, "threshold": None}, {"threshold": run.mask_threshold, "rule": run.mask_rule}
    rng = np.random.default_rng(0)
    print(f"{run!r}; saliency.views={run.config.saliency.views}; {jax.device_count()} {jax.default_backend()} "
          f"device(s); tile batch {run.tile_batch}/device")
    with tempfile.TemporaryDirectory() as out:
        for sub in ("maps", "thumbs"):
            os.makedirs(os.path.join(out, sub))
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            photos = [rng.random((height, width, 3), np.float32) for _ in range(args.count + 1)]
            predict_run.predict_photo(run, photos[0], "warmup", "warmup", out, methods, abstain, mask)
            start = time.time()
            for i, photo in enumerate(photos[1:]):
                record = predict_run.predict_photo(run, photo, f"p{i}", f"p{i}", out, methods, abstain, mask)
            seconds = (time.time() - start) / args.count
            print(f"{width}x{height}: {record['tiles']} tiles, {seconds:.2f} s/photo, {1 / seconds:.3f} photos/s, "
                  f"{record['tiles'] / seconds:.0f} tiles/s", flush=True)


if __name__ == "__main__":
    main()
