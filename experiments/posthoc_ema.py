"""Which EMA decay of G gives the best masks, read from one run's raw G snapshots (post-hoc EMA).

    python -m cfjax.main --config=configs/cracks.py --config.checkpoint_every=50 \\
        --config.keep_checkpoints=1000 --workdir=/tmp/ema_s0          # the default run, snapshots kept
    python experiments/posthoc_ema.py --workdir=/tmp/ema_s0 --decays=0.998,0.999,0.9995,0.9998

Saving more checkpoints does not change the run (resume is exact), so its own EMA (config.ema_decay)
is the default's. Every decay is rebuilt from the same raw G snapshots, Σ_i d^(T - s_i) θ_{s_i}
normalised, and scored exactly as training scores its last step (τ tuned on validation, frozen on
test), so decays are compared on one trajectory: no seed-to-seed noise between them. The run's own
decay is rebuilt too, and its distance from the stored EMA says how close the snapshot sum comes.
Prints a table, and with --out=FILE.json also writes it there (the run's folder is only read).
"""

import argparse
import sys
import tempfile

import jax
import numpy as np

from cfjax import checkpoint, evaluate, kinds, parallel, storage
from cfjax.data import pipeline
from cfjax.metric_writer import MetricWriter
from cfjax.saved_runs import saved_config


def snapshot_ema(snapshots: dict, decay: float, last: int):
    """Σ_i d^(last - s_i) θ_{s_i} / Σ_i d^(last - s_i) over the snapshots {step: params} up to `last`: the
    EMA at `last` as far as snapshots every few steps can give it."""
    steps = sorted(s for s in snapshots if s <= last)
    weights = np.array([decay ** (last - s) for s in steps])
    weights /= weights.sum()
    return jax.tree.map(lambda *leaves: sum(w * leaf for w, leaf in zip(weights, leaves)),
                        *[snapshots[s] for s in steps])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--decays", default="0.998,0.999,0.9995,0.9998")
    parser.add_argument("--at", type=int, default=None, help="the step read, a checkpoint's (default: the last)")
    parser.add_argument("--out", default=None, help="also write the rows to this .json file")
    args = parser.parse_args(argv)
    config = saved_config(args.workdir)
    mesh = parallel.make_mesh()
    kind = kinds.make_kind(config, mesh)
    template = checkpoint.abstract_like(kind.init_state(jax.random.PRNGKey(config.seed)))
    reader = checkpoint.Checkpointer(args.workdir, read_only=True)
    steps = reader.all_steps()
    last = args.at or steps[-1]
    if last not in steps:
        sys.exit(f"--at={last}: {args.workdir} has no checkpoint of that step (it has {steps[0]} to {steps[-1]})")
    if len([s for s in steps if s <= last]) < 10:
        sys.exit(f"{args.workdir}: too few checkpoints up to step {last}; train with --config.checkpoint_every=50 "
                 "--config.keep_checkpoints=1000 to keep the snapshots this needs")
    # Only G's raw weights of each snapshot are read; the whole state of the last one.
    g_only = {"g_params": template.g_params}
    snapshots = {step: jax.tree.map(np.asarray, reader.restore_fields(g_only, step)["g_params"])
                 for step in steps if step <= last}
    reader.close()
    reader = checkpoint.Checkpointer(args.workdir, read_only=True)  # orbax: one kind of restore per manager
    final = reader.restore(template, last)
    reader.close()

    data = {split: pipeline.evaluation_arrays(config, split) for split in ("validation", "test")}
    grid = evaluate.threshold_grid(config)
    with tempfile.TemporaryDirectory() as scratch:
        kind.attach(data, scratch, MetricWriter(scratch, enabled=False))

        def score(g_params) -> dict:
            state = final.replace(g_ema_params=g_params)
            val, test = kind.evaluate(state, "validation"), kind.evaluate(state, "test")
            summary = evaluate.summarize(test, grid, tuned_on=val)["iou_counterfactual"]
            return {"test_iou_mean": summary["iou_mean"], "test_iou_dataset": summary["iou_dataset"],
                    "validation_iou_mean": evaluate.summarize(val, grid)["iou_counterfactual"]["iou_mean"]}

        rows = {"stored EMA": score(final.g_ema_params), "raw G": score(final.g_params)}
        for decay in (float(d) for d in args.decays.split(",")):
            rows[f"snapshots, decay {decay:g}"] = score(snapshot_ema(snapshots, decay, last))
    own = snapshot_ema(snapshots, config.ema_decay, last)
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(own),
                                                              jax.tree.leaves(jax.device_get(final.g_ema_params))))
    print(f"{args.workdir}, step {last}, {len(snapshots)} snapshots (every {steps[1] - steps[0]} steps); "
          f"rebuilt decay {config.ema_decay:g} differs from the stored EMA by at most {gap:.2e}")
    print("| G weights | test IoU (per image) | test IoU (dataset) | validation IoU |\n|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['test_iou_mean']:.4f} | {row['test_iou_dataset']:.4f} | "
              f"{row['validation_iou_mean']:.4f} |")
    if args.out:
        storage.write_json_atomic(args.out, {
            "workdir": args.workdir, "step": last, "snapshots": len(snapshots), "stored_vs_rebuilt_max_abs": gap,
            "rows": rows, "command": " ".join(["python", *sys.argv])})


if __name__ == "__main__":
    main()
