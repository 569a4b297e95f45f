"""`train_and_evaluate(config, workdir)`: the one training loop, called by the CLI, tests and notebooks."""

import dataclasses
import os
import signal
import time

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from cfjax import checkpoint, evaluate, interrupts, kinds, parallel, storage, workdir_lock
from cfjax.config.validation import validate_config
from cfjax.data import pipeline, sources
from cfjax.metric_writer import MetricWriter
from cfjax.version import __version__


class NonFiniteError(FloatingPointError):
    """A loss, gradient or parameter norm became NaN/Inf; the run stopped without applying it."""


class Preempted(RuntimeError):
    """SIGTERM or SIGINT arrived during training: the step in progress finished, was checkpointed, and
    the run stopped; the same command resumes it. `signum` is the signal received."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# Within the training loop, SIGTERM (a preemptible VM's notice) and SIGINT (Ctrl-C) are recorded instead of
# stopping the process at once, so the loop can finish its step and save first (see cfjax.interrupts).
_stop_requests = interrupts.deferred


# With on_non_finite="skip_batch", this many non-finite batches in a row mean the state itself diverged.
MAX_SKIPPED_IN_A_ROW = 10

def _non_finite_terms(metrics: dict) -> list[str]:
    return sorted(name for name, value in metrics.items() if name != "finite" and not np.isfinite(np.asarray(value)))


def _non_finite_error(bad: list[str], step: int, checkpointer: checkpoint.Checkpointer) -> NonFiniteError:
    """The error naming the step, the terms that went non-finite and the last good checkpoint."""
    checkpointer.wait()  # the newest save may still be in flight: name only a finished one
    last = checkpointer.latest_step()
    where = (f"the last good checkpoint is step {last} in {checkpointer.directory}" if last is not None
             else "no checkpoint was written yet")
    return NonFiniteError(
        f"non-finite values at step {step + 1} in: {', '.join(bad)}. The update was not applied; {where}. "
        "To skip such batches instead, set --config.on_non_finite=skip_batch."
    )


def _at_boundary(step: int, config: ml_collections.ConfigDict) -> bool:
    """Whether the loop does anything but train after update number `step`."""
    return step >= config.num_steps or any(step % config[every] == 0 for every in
                                           ("log_every", "image_every", "eval_every", "checkpoint_every"))


def _position(batches, skipped: list[int]) -> dict:
    """What a checkpoint stores of the input: the pipeline's position and the batches skipped as non-finite.
    With several processes, each one's own position too ("per_process", in process order; process 0 writes
    the checkpoint's JSON items): a collective, every process calls it."""
    position = batches.get_state()
    stored = {**position, "skipped_batches": skipped}
    if jax.process_count() > 1:
        stored["per_process"] = parallel.allgather_json(position)
    return stored


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train `config.model` (the counterfactual GAN, or a baseline: see `cfjax.kinds`), checkpointing and evaluating as
    configured; returns the results.

    Re-running on the same workdir resumes from its newest checkpoint; on a finished workdir it
    returns the saved results without recomputing them.
    """
    validate_config(config)
    start_time = time.time()
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    sources.check_prepared(config)  # refuse before the workdir is created
    storage.check_writable(workdir)  # a read-only or full disk, a file in the way: refused before any work
    storage.make_dirs(workdir)
    interrupts.check()  # a stop signal during start-up whose exception was swallowed
    with workdir_lock.held(workdir, enabled=jax.process_index() == 0):  # one writer: a second is refused here
        return _train_and_evaluate_locked(config, workdir, mesh, start_time)


@dataclasses.dataclass(frozen=True)
class TrainingClock:
    """The wall time spent training a run, summed over the processes that trained it: the time the earlier
    ones had spent up to the checkpoint this one resumed from (saved with it), plus this process's. That is
    what one uninterrupted run would take, give or take start-ups; `carried_s` is None (the total unknown)
    when the checkpoint resumed from predates the record."""

    started: float
    carried_s: float | None = 0.0

    def total_s(self) -> float | None:
        return None if self.carried_s is None else self.carried_s + (time.time() - self.started)


def _train_and_evaluate_locked(config, workdir, mesh, start_time) -> dict:
    """`train_and_evaluate` once this process is the workdir's one writer."""
    kind = kinds.make_kind(config, mesh)
    state = kind.init_state(jax.random.PRNGKey(config.seed))
    interrupts.check()
    checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    clock = TrainingClock(start_time)
    try:
        if checkpointer.latest_step() is not None:
            state, damaged = checkpointer.restore_newest_readable(checkpoint.abstract_like(state), config)
            for note in damaged:
                print(f"cfjax: warning: {note}", flush=True)
            print(f"cfjax: resuming from step {int(state.step)} in {checkpointer.directory}", flush=True)
            clock = TrainingClock(start_time, checkpointer.saved_training_time(int(state.step)))
        interrupts.check()
        finished = _saved_results(workdir, int(state.step), config.num_steps)
        if finished is not None:
            print(f"cfjax: {workdir} already finished step {finished['step']}; results in "
                  f"{os.path.join(workdir, 'results.json')}", flush=True)
            return finished
        results = _train(config, workdir, kind, state, checkpointer, clock)
    finally:
        checkpointer.close()
    results["wall_time_s"] = time.time() - start_time  # this process's
    results["training_wall_time_s"] = clock.total_s()  # every process's, up to the checkpoints it resumed from
    if jax.process_index() == 0:
        storage.write_json_atomic(os.path.join(workdir, "results.json"), results)
    _report(workdir, checkpointer, results)
    return results


def _saved_results(workdir: str, step: int, num_steps: int) -> dict | None:
    """The results of a run that already reached num_steps, if they were written. An unreadable
    results.json (cut short by a crash or a full disk before writes were atomic) counts as not written:
    the final evaluation runs again from the newest checkpoint, with a warning."""
    path = os.path.join(workdir, "results.json")
    if step < num_steps or not os.path.exists(path):
        return None
    results = storage.read_json(path)
    if not isinstance(results, dict):
        print(f"cfjax: warning: {path} cannot be read (cut short?); evaluating checkpoint {step} again to "
              "rewrite it", flush=True)
        return None
    return results if results.get("step") == step else None


def _train(config, workdir, kind, state, checkpointer, clock: TrainingClock) -> dict:
    """Open the data, run the loop, and stop the input pipeline's threads however the loop ends."""
    data = {split: pipeline.evaluation_arrays(config, split) for split in ("validation", "test")}
    batches = pipeline.train_batches(pipeline.training_source(config), config, kind.mesh,
                                     with_masks=kind.needs_masks)
    try:
        skipped = checkpointer.restore_position(int(state.step), batches) if int(state.step) > 0 else []
        return _train_loop(config, workdir, kind, state, checkpointer, data, batches, skipped, clock)
    finally:
        batches.close()


def _train_loop(config, workdir, kind, state, checkpointer, data, batches, skipped: list[int],
                clock: TrainingClock) -> dict:
    """The loop from the state's step to config.num_steps, then the final evaluation. `skipped` lists
    the batches passed over as non-finite (saved with the input position, so resuming stays exact)."""
    start_step = int(state.step)
    is_main = jax.process_index() == 0
    writer = MetricWriter(workdir, resume_step=start_step, enabled=is_main)
    if is_main and start_step == 0:
        storage.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict(), default=str)

    kind.attach(data, workdir, writer)
    grid = evaluate.threshold_grid(config)
    interrupts.check()  # the last moment before the loop takes over the stop signals

    last_log_time, last_log_step = time.time(), start_step
    with _stop_requests() as stop_requests, tqdm(total=config.num_steps, initial=start_step, desc="train",
                                                  disable=not is_main, dynamic_ncols=True, mininterval=2.0) as bar:
        # `step` counts the updates known to be applied. A step's `finite` flag is read only after the next
        # step is dispatched, so the host never stalls the device between steps; a step that may end at a
        # boundary (log, images, evaluation, checkpoint, a stop request, the last step) is read at once.
        # A non-finite step was never applied (`keep_if_finite`): the step dispatched after it ran on the last
        # good state, which is what skipping the batch means.
        step, skipped_in_a_row, pending = start_step, 0, None

        def resolve(checked):
            """Account for one dispatched step: True when it was applied."""
            nonlocal step, skipped_in_a_row
            metrics, batch_index = checked
            if bool(metrics["finite"]):
                step, skipped_in_a_row = step + 1, 0
                bar.update(1)
                return True
            bad, skipped_in_a_row = _non_finite_terms(metrics), skipped_in_a_row + 1
            if config.on_non_finite == "stop":
                raise _non_finite_error(bad, step, checkpointer)
            if skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
                raise NonFiniteError(f"{_non_finite_error(bad, step, checkpointer)} {skipped_in_a_row} batches in "
                                     "a row were non-finite: the model itself diverged (lower the learning rate?)")
            skipped.append(batch_index)
            writer.scalars(step, {"skipped_batch": batch_index, "skipped_batches": len(skipped)}, prefix="train/")
            print(f"cfjax: skipped batch {batch_index}: non-finite values at step {step + 1} in: {', '.join(bad)}",
                  flush=True)
            return False

        while step < config.num_steps:
            batch_index = batches.next_index()
            state, metrics = kind.train_step(state, next(batches))
            if pending is not None:
                resolve(pending)
            pending = (metrics, batch_index)
            stop = parallel.agreed_stop_signal(batch_index, stop_requests[0] if stop_requests else 0)
            if not (_at_boundary(step + 1, config) or stop):
                continue
            applied, pending = resolve(pending), None
            if not applied:
                continue
            if step % config.log_every == 0 or step == config.num_steps:
                now = time.time()
                scalars = {k: v for k, v in jax.device_get(metrics).items() if k != "finite"}
                scalars["steps_per_sec"] = (step - last_log_step) / max(now - last_log_time, 1e-9)
                last_log_time, last_log_step = now, step
                writer.scalars(step, scalars, prefix="train/")
                bar.set_postfix({short: f"{scalars[name]:.3f}" for short, name in kind.progress_fields})
            if step % config.image_every == 0:
                kind.write_images(step, state)
            if step % config.eval_every == 0 and step != config.num_steps:
                val = kind.evaluate(state, "validation")
                writer.scalars(step, evaluate.summarize(val, grid),
                               prefix="validation/")
            if step % config.checkpoint_every == 0 or step == config.num_steps or stop:
                checkpointer.save(step, state, config, data_state=_position(batches, skipped),
                                  training_time_s=clock.total_s())
            if stop:
                checkpointer.wait()
                writer.close()
                name = signal.Signals(stop).name
                where = "" if stop_requests or jax.process_count() == 1 else " by another process"
                raise Preempted(f"{name} received{where}: stopped after step {step} and saved it in "
                                f"{checkpointer.directory}; run the same command to resume", stop)
    checkpointer.wait()
    if checkpointer.latest_step() != int(state.step):
        checkpointer.save(int(state.step), state, config, data_state=_position(batches, skipped),
                          training_time_s=clock.total_s())
        checkpointer.wait()

    results = _final_evaluation(state, kind, config, writer)
    writer.close()
    return results


def _final_evaluation(state, kind, config, writer) -> dict:
    """Thresholds tuned on validation, then frozen and applied to test."""
    val = kind.evaluate(state, "validation")
    test = kind.evaluate(state, "test")
    grid = evaluate.threshold_grid(config)
    step = int(state.step)
    results = {
        "step": step,
        "test": evaluate.summarize(test, grid, tuned_on=val),
        "validation": evaluate.summarize(val, grid),
        "config_name": config.name,
        "model": kind.name,
        "seed": config.seed,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "versions": {"cfjax": __version__, "jax": jax.__version__},
    }
    writer.scalars(step, results["test"], prefix="test/")
    kind.write_images(step, state)
    return results


_HEADLINE = {"d_accuracy": "D accuracy", "g_head_accuracy": "G head accuracy", "flip_rate": "flip rate",
             "accuracy": "accuracy"}


def _report(workdir: str, checkpointer: checkpoint.Checkpointer, results: dict) -> None:
    test = results["test"]
    scores = [f"{label} {test[key]:.3f}" for key, label in _HEADLINE.items() if key in test]
    lines = [f"Finished step {results['step']}. Test: {', '.join(scores)}"]
    ious = [f"{method.removeprefix('iou_').replace('_', ' ')} {value['iou_mean']:.3f}"
            for method, value in test.items() if method.startswith("iou_")]
    if ious:
        lines.append(f"  mask IoU (per-image mean, threshold tuned on validation): {'; '.join(ious)}")
    lines += [
        f"  results:     {os.path.join(workdir, 'results.json')}",
        f"  figures:     {os.path.join(workdir, 'images')}",
        f"  checkpoints: {checkpointer.directory}",
        f"  logs:        {os.path.join(workdir, 'metrics.jsonl')} and TensorBoard in {os.path.join(workdir, 'tb')}",
    ]
    if jax.process_index() == 0:
        print("\n".join(lines), flush=True)
