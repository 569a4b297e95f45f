"""`attack(config, workdir)`: restore a run, attack every classifier it holds on its test split (or the
validation split, to choose between runs without reading test), and write robustness.json, robustness.md
and plots. Called by `python -m cfjax.main --mode=attack` and notebooks."""

import dataclasses
import os
import time

import jax
import ml_collections
import numpy as np

from cfjax import checkpoint, interrupts, storage, workdir_lock
from cfjax.data import pipeline
from cfjax.errors import ConfigError
from cfjax.kinds import Readout
from cfjax.robustness import protocols, report
from cfjax.robustness.progress import SweepProgress
from cfjax.robustness.sweep import ModelSweep, clean_scores
from cfjax.saved_runs import load_run, params_digest, saved_config
from cfjax.version import __version__


def attack(config: ml_collections.ConfigDict, workdir: str, *, transfer_from: str | None = None,
           split: str = "test", out_dir: str | None = None) -> dict:
    """Every sweep and check of `config.attack` on each model of the run; with `transfer_from` (another
    run's workdir), also PGD examples made on that run's models and scored on this run's. Returns
    robustness.json's content."""
    start = time.time()
    out_dir = out_dir or os.path.join(workdir, "attack" if split == "test" else f"attack_{split}")
    saved_source = _transfer_config(transfer_from, config) if transfer_from else None
    run = load_run(config, workdir)
    primary = jax.process_index() == 0
    if primary:
        storage.check_writable(out_dir)  # before minutes of attacks, not after
    with workdir_lock.output_held(out_dir, enabled=primary):
        models = _chosen(run.kind.readouts(run.params), config.attack.models)
        sources, source_step = _transfer_sources(transfer_from, saved_source) if transfer_from else ([], None)
        data = pipeline.evaluation_arrays(config, split)
        if config.attack.max_examples:
            data = {name: np.asarray(array)[:config.attack.max_examples] for name, array in data.items()}
        key = jax.random.PRNGKey(config.seed)
        # Finished settings are kept so a rerun resumes; one process only (others could not see its files).
        progress = SweepProgress(os.path.join(out_dir, "partial") if jax.process_count() == 1 else None, {
            "config": config.name, "step": run.step, "data": config.data.name, "split": split,
            "num_images": len(data["label"]), "transfer_step": source_step,
            "seed": config.seed, "batch_size": config.eval.batch_size, "cfjax": __version__,
            "adaptive_weight": config.attack.adaptive_weight})
        common = dict(batch_size=config.eval.batch_size, mesh=run.mesh, key=key,
                      adaptive_weight=config.attack.adaptive_weight, progress=progress)
        reference = protocols.check_settings(config.attack, has_detector=False)[0]  # PGD-10 CE at the check budget
        results = {"workdir": workdir, "step": run.step, "params_digest": params_digest(run.params),
                   "model": run.kind.name, "config_name": config.name,
                   "data": {"source": f"the {split} split of {config.data.name}", "num_images": len(data["label"])},
                   "settings": config.attack.to_dict(), "models": {}}
        for model in models:
            sweep = ModelSweep(model, data, **common)
            rows = [_scored(sweep, s) for s in protocols.sweep_settings(config.attack)]
            check_rows = [_scored(sweep, s) for s in protocols.check_settings(config.attack, model.has_detector)]
            for source in sources:
                row = ModelSweep(model, data, source=source, clean=sweep.clean, **common).score(reference)
                check_rows.append({**row, "group": "transfer"})
            clean = clean_scores(sweep.clean["logits"], data["label"], model.num_classes, model.has_detector,
                                 mixed_logits=sweep.outputs(reference)["logits"])
            results["models"][model.name] = {"clean": clean["scores"], "risk_coverage": clean["risk_coverage"],
                                             "sweeps": rows, "checks": check_rows}
        results["versions"] = {"cfjax": __version__, "jax": jax.__version__}
        results["wall_time_s"] = time.time() - start
        interrupts.check()  # a stop signal whose exception a callback swallowed: write nothing
        if primary:
            results["files"] = report.write(out_dir, results)
            storage.write_json_atomic(os.path.join(out_dir, "robustness.json"), results)
            progress.clear()
    results["out_dir"] = out_dir
    return results


def _scored(sweep: ModelSweep, setting: protocols.AttackSetting) -> dict:
    """One setting's row, with a line of progress: an ensemble budget can take many minutes on a CPU."""
    start = time.time()
    row = sweep.score(setting)
    if jax.process_index() == 0:
        print(f"cfjax: attack {sweep.target.name}: {setting.label()}: accuracy "
              f"{row['accuracy']:.3f} ({time.time() - start:.1f} s)", flush=True)
    return row


def _chosen(models: list[Readout], names) -> list[Readout]:
    """The models `config.attack.models` names (all when empty)."""
    available = [m.name for m in models]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ConfigError(f"config.attack.models={tuple(names)!r}: this run has no {unknown[0]!r}; "
                          f"it holds {tuple(available)}")
    return [m for m in models if not names or m.name in names]


def _transfer_config(workdir: str, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config saved with another run's checkpoint, checked to see the same images and classes."""
    try:
        saved = saved_config(workdir)
    except checkpoint.CheckpointError as error:
        raise checkpoint.CheckpointError(f"--transfer_from={workdir}: {error}") from None
    for field in ("num_classes", "data.image_size", "data.name"):
        mine, theirs = config, saved
        for part in field.split("."):
            mine, theirs = mine[part], theirs[part]
        if mine != theirs:
            raise ConfigError(f"--transfer_from={workdir}: its config.{field}={theirs!r} differs from this run's "
                              f"{mine!r}; transfer needs the same images and classes")
    return saved


def _transfer_sources(workdir: str, saved: ml_collections.ConfigDict) -> tuple[list[Readout], int]:
    """The models of another run, restored with the config saved in its checkpoint, and its step."""
    source_run = load_run(saved, workdir)
    return [dataclasses.replace(m, name=f"{saved.name}/{m.name}")
            for m in source_run.kind.readouts(source_run.params)], source_run.step
