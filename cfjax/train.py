"""`train_and_evaluate(config, workdir)`: the one training loop, called by the CLI, tests and notebooks."""

import json
import os
import time

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

import cfjax
from cfjax import checkpoint, evaluate, parallel, steps, visualize
from cfjax.config_validation import validate_config
from cfjax.data import pipeline
from cfjax.metric_writer import MetricWriter
from cfjax.models import make_discriminator, make_generator
from cfjax.nested import flatten_dict
from cfjax.optim import make_optimizer


class NonFiniteError(FloatingPointError):
    """A loss, gradient or parameter norm became NaN/Inf; the run stopped without applying it."""


def build_models(config: ml_collections.ConfigDict) -> steps.GanModels:
    """G, D and their optimizers as described by the config."""
    return steps.GanModels(
        generator=make_generator(config),
        discriminator=make_discriminator(config),
        g_tx=make_optimizer(config.optimizer.generator, config.num_steps),
        d_tx=make_optimizer(config.optimizer.discriminator, config.num_steps),
    )


class _ImageLogger:
    """Writes the per-class counterfactual grids from a fixed set of validation images."""

    def __init__(self, validation: dict, generator, config, workdir: str, writer: MetricWriter):
        self.directory = os.path.join(workdir, "images")
        self.writer = writer
        self.per_class = []
        for k in range(config.num_classes):
            rows = np.flatnonzero(validation["label"] == k)[: config.eval.num_image_rows]
            self.per_class.append({name: validation[name][rows] for name in ("image", "mask", "label")})
        self._counterfactual = jax.jit(
            lambda params, x, y: generator.apply({"params": params}, x, evaluate.evaluation_targets(y))[0]
        )

    def write(self, step: int, g_params) -> list[str]:
        os.makedirs(self.directory, exist_ok=True)
        paths = []
        for k, examples in enumerate(self.per_class):
            if not len(examples["label"]):
                continue
            x_hat = self._counterfactual(g_params, examples["image"], examples["label"])
            grid = visualize.counterfactual_grid(examples["image"], np.asarray(x_hat), examples["mask"])
            path = os.path.join(self.directory, f"step_{step:06d}_class{k}.png")
            if jax.process_index() == 0:
                visualize.save_png(path, grid)
                self.writer.image(step, f"counterfactuals/class{k}", grid)
            paths.append(path)
        return paths


def _check_finite(metrics: dict, step: int, checkpointer: checkpoint.Checkpointer) -> None:
    if bool(metrics["finite"]):
        return
    bad = sorted(name for name, value in metrics.items() if name != "finite" and not np.isfinite(np.asarray(value)))
    checkpointer.wait()  # the newest save may still be in flight: name only a finished one
    last = checkpointer.latest_step()
    where = (f"the last good checkpoint is step {last} in {checkpointer.directory}" if last is not None
             else "no checkpoint was written yet")
    raise NonFiniteError(
        f"non-finite values at step {step + 1} in: {', '.join(bad)}. The update was not applied; {where}."
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train the counterfactual GAN, checkpointing and evaluating as configured; returns the results.

    Re-running on the same workdir resumes from its newest checkpoint; on a finished workdir it
    returns the saved results without recomputing them.
    """
    validate_config(config)
    start_time = time.time()
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    os.makedirs(workdir, exist_ok=True)

    models = build_models(config)
    state = steps.make_init_fn(models, config, mesh)(jax.random.PRNGKey(config.seed))
    checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    try:
        if checkpointer.latest_step() is not None:
            checkpointer.check_compatible(config)
            state = checkpointer.restore(checkpoint.abstract_like(state))
            print(f"cfjax: resuming from step {int(state.step)} in {checkpointer.directory}", flush=True)
        finished = _saved_results(workdir, int(state.step), config.num_steps)
        if finished is not None:
            print(f"cfjax: {workdir} already finished step {finished['step']}; results in "
                  f"{os.path.join(workdir, 'results.json')}", flush=True)
            return finished
        results = _train(config, workdir, models, state, checkpointer, mesh)
    finally:
        checkpointer.close()
    results["wall_time_s"] = time.time() - start_time
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    _report(workdir, checkpointer, results)
    return results


def _saved_results(workdir: str, step: int, num_steps: int) -> dict | None:
    """The results of a run that already reached num_steps, if they were written."""
    path = os.path.join(workdir, "results.json")
    if step < num_steps or not os.path.exists(path):
        return None
    with open(path) as f:
        results = json.load(f)
    return results if results.get("step") == step else None


def _train(config, workdir, models, state, checkpointer, mesh) -> dict:
    """Open the data, run the loop, and stop the input pipeline's threads however the loop ends."""
    data = {split: pipeline.evaluation_arrays(config, split) for split in ("validation", "test")}
    batches = pipeline.train_batches(pipeline.training_source(config), config, mesh)
    try:
        if int(state.step) > 0:
            checkpointer.restore_position(int(state.step), batches)
        return _train_loop(config, workdir, models, state, checkpointer, mesh, data, batches)
    finally:
        batches.close()


def _train_loop(config, workdir, models, state, checkpointer, mesh, data, batches) -> dict:
    """The loop from the state's step to config.num_steps, then the final evaluation."""
    start_step = int(state.step)
    is_main = jax.process_index() == 0
    writer = MetricWriter(workdir, resume_step=start_step, enabled=is_main)
    if is_main and start_step == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=2, default=str)

    evaluators = {
        split: evaluate.CounterfactualEvaluator(
            data[split], generator=models.generator, discriminator=models.discriminator, config=config, mesh=mesh
        )
        for split in ("validation", "test")
    }
    images = _ImageLogger(data["validation"], models.generator, config, workdir, writer)
    train_step = steps.make_gan_step(models, config, mesh)

    last_log_time, last_log_step = time.time(), start_step
    with tqdm(total=config.num_steps, initial=start_step, desc="train", disable=not is_main,
              dynamic_ncols=True, mininterval=2.0) as bar:
        for step in range(start_step, config.num_steps):
            state, metrics = train_step(state, next(batches))
            # One scalar read per step: a non-finite step stops the run before anything else uses or
            # saves its state (a deliberate sync: grain threads and the device prefetch in `batches`
            # already hold the next batch, so the sync costs the loop little).
            _check_finite(metrics, step, checkpointer)
            done = step + 1
            bar.update(1)
            if done % config.log_every == 0 or done == config.num_steps:
                now = time.time()
                scalars = {k: v for k, v in jax.device_get(metrics).items() if k != "finite"}
                scalars["steps_per_sec"] = (done - last_log_step) / max(now - last_log_time, 1e-9)
                last_log_time, last_log_step = now, done
                writer.scalars(done, scalars, prefix="train/")
                bar.set_postfix(d=f"{scalars['d_loss']:.3f}", g=f"{scalars['g_loss']:.3f}",
                                flip=f"{scalars['flip_rate']:.2f}", acc=f"{scalars['d_acc_real']:.2f}")
            if done % config.image_every == 0:
                images.write(done, state.g_ema_params)
            if done % config.eval_every == 0 and done != config.num_steps:
                val = evaluators["validation"].run(state.g_ema_params, state.d_params)
                writer.scalars(done, flatten_dict(evaluate.summarize(val, evaluators["validation"].thresholds), "/"),
                               prefix="validation/")
            if done % config.checkpoint_every == 0 or done == config.num_steps:
                checkpointer.save(done, state, config, data_state=batches.get_state())
    checkpointer.wait()
    if checkpointer.latest_step() != int(state.step):
        checkpointer.save(int(state.step), state, config, data_state=batches.get_state())
        checkpointer.wait()

    results = _final_evaluation(state, evaluators, config, images, writer)
    writer.close()
    return results


def _final_evaluation(state, evaluators, config, images, writer) -> dict:
    """Thresholds tuned on validation, then frozen and applied to test."""
    val = evaluators["validation"].run(state.g_ema_params, state.d_params)
    test = evaluators["test"].run(state.g_ema_params, state.d_params)
    thresholds = evaluators["test"].thresholds
    step = int(state.step)
    results = {
        "step": step,
        "test": evaluate.summarize(test, thresholds, tuned_on=val),
        "validation": evaluate.summarize(val, thresholds),
        "config_name": config.name,
        "seed": config.seed,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "versions": {"cfjax": cfjax.__version__, "jax": jax.__version__},
    }
    writer.scalars(step, flatten_dict(results["test"], "/"), prefix="test/")
    images.write(step, state.g_ema_params)
    return results


def _report(workdir: str, checkpointer: checkpoint.Checkpointer, results: dict) -> None:
    test = results["test"]
    lines = [
        f"Finished step {results['step']}. Test: D accuracy {test['d_accuracy']:.3f}, "
        f"G head accuracy {test['g_head_accuracy']:.3f}, flip rate {test['flip_rate']:.3f}",
    ]
    if "iou_counterfactual" in test:
        lines.append(
            f"  counterfactual mask IoU {test['iou_counterfactual']['iou_mean']:.3f} "
            f"(dataset-level {test['iou_counterfactual']['iou_dataset']:.3f}); "
            f"dark pixels {test['iou_dark_pixels']['iou_mean']:.3f}; "
            f"local contrast {test['iou_local_contrast']['iou_mean']:.3f}"
        )
    lines += [
        f"  results:     {os.path.join(workdir, 'results.json')}",
        f"  figures:     {os.path.join(workdir, 'images')}",
        f"  checkpoints: {checkpointer.directory}",
        f"  logs:        {os.path.join(workdir, 'metrics.jsonl')} and TensorBoard in {os.path.join(workdir, 'tb')}",
    ]
    if jax.process_index() == 0:
        print("\n".join(lines), flush=True)
