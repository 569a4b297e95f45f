"""Command line: `python -m cfjax.main --config=configs/cracks.py [--workdir=DIR] [--config.FIELD=VALUE ...]`.

Only parses flags and calls `train.train_and_evaluate(config, workdir)` (flax/examples style), or on a
trained run, `explain.run.explain(config, workdir, ...)` (`--mode=explain`) or
`robustness.run.attack(config, workdir, ...)` (`--mode=attack`) or `predict.run.predict(config, workdir,
folder, ...)` (`--mode=predict`). Those read the run's saved config;
a `--config` given with them sets only its evaluation sections (and where the data is on this machine).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/cracks.py[:variant]; required to train. With --mode=explain|attack "
    "(optional there) only its sections eval, saliency, explain, attack and data location replace the saved run's.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go (default: runs/<config name>).")
_DISTRIBUTED = flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize() (multi-host runs): "
                                  "with no other flag, JAX reads the cluster from the environment (Cloud TPU, SLURM, "
                                  "Open MPI). Implied by --coordinator_address or $JAX_COORDINATOR_ADDRESS.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process runs: host:port of process 0's "
                                   "coordinator (default $JAX_COORDINATOR_ADDRESS). See docs/multihost.md.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes "
                                      "(default $JAX_NUM_PROCESSES).", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0 .. "
                                   "num_processes-1 (default $JAX_PROCESS_ID).", lower_bound=0)
_HEARTBEAT = flags.DEFINE_integer("heartbeat_timeout_s", None, "Multi-process runs: seconds without a heartbeat "
                                  "after which a process counts as dead and the others stop (JAX's default 100; "
                                  "default $CFJAX_HEARTBEAT_TIMEOUT_S).", lower_bound=1)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "explain", "attack", "predict"],
                          "train (and evaluate); explain: score a trained run's masks and attributions; "
                          "attack: PGD sweeps and p_fake uncertainty on a trained run; predict: classes, p_fake, "
                          "maps, masks and counterfactuals of every photo under --folder.")
_FOLDER = flags.DEFINE_string("folder", None, "--mode=explain: a folder with images/ and masks/ to explain "
                              "instead of the run's test split (no dataset to prepare). --mode=predict (required): "
                              "the photos, any format and size, found recursively.")
_EVAL_DATA = flags.DEFINE_string("eval_data", None, "--mode=explain: score the run on this other prepared dataset's "
                                 "test split (e.g. crack_segmentation/uav75), every threshold still from the run's own "
                                 "validation split; writes WORKDIR/explain_<dataset> (docs/explaining.md).")
_ABSTAIN_THRESHOLD = flags.DEFINE_float("abstain_threshold", None, "--mode=predict: abstain when p_fake is above "
                                        "this (default: chosen on the run's validation split).")
_MASK_THRESHOLD = flags.DEFINE_integer("mask_threshold", 127, "--folder masks: damage where the mask is above this.",
                                       lower_bound=0, upper_bound=254)
_CRACK_VALUE = flags.DEFINE_integer("crack_value", None, "--folder masks: damage where the mask equals this value "
                                    "(label maps); overrides --mask_threshold.", lower_bound=0, upper_bound=255)
_OUT = flags.DEFINE_string("out", None, "--mode=explain|attack|predict: output folder (default "
                           "WORKDIR/explain[_FOLDER], WORKDIR/attack or WORKDIR/predict_FOLDER).")
_TRANSFER_FROM = flags.DEFINE_string("transfer_from", None, "--mode=attack: another run's workdir whose models craft "
                                     "transfer attacks on this run's (a gradient-masking check).")
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "Print the resolved config (after overrides and, for "
                                   "--mode=explain|attack, merged into the run's saved one) and exit.")

# Exit codes (docs/reliability.md#exit-codes); `exit_code` maps each error type to one, in this one place.
NON_FINITE = 1  # training stopped on NaN/Inf values (the update was not applied)
USAGE_ERROR = 2  # bad flags, config or input data: the command cannot work as typed
FAULT = 3  # the machine or a saved file failed: a full disk, a read-only folder, a damaged checkpoint
SIGNAL_BASE = 128  # stopped by signal N (Ctrl-C: 130, SIGTERM: 143): the shell's convention


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with a one-line error (exit code 2) for bad config fields instead of a traceback."""
    try:
        argv = flags.FLAGS(argv)
        if _CONFIG.value is None:
            if _MODE.value == "train":
                _fail("--config is required to train, e.g. --config=configs/cracks.py:tiny "
                      "(--mode=explain|attack|predict read a trained run's saved config)")
            if _WORKDIR.value is None:
                _fail(f"--mode={_MODE.value} without --config needs --workdir: the trained run to read")
        else:
            _ = _CONFIG.value.name  # reads the config now: a missing file is a usage error too
        if _EVAL_DATA.value is not None and _MODE.value != "explain":
            _fail("--eval_data is for --mode=explain: the dataset a trained run is scored on")
        if _MODE.value == "predict" and _FOLDER.value is None:
            _fail("--mode=predict needs --folder: the photos to predict on")
        return argv
    except flags.Error as error:
        _fail(f"{_without_traceback(str(error))}\nPass --helpshort to see the flags.")
    except OSError as error:  # the config file could not be read
        _fail(f"--config: {str(error).strip().splitlines()[-1].strip()}")
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        message = str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace('\\"', '"')
        _fail(f"bad --config: {message}")


def _without_traceback(message: str) -> str:
    """ml_collections embeds the traceback of a failing get_config(); keep its first and last lines."""
    if "Traceback (most recent call last)" not in message:
        return message
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f"{lines[0]} {lines[-1]}"


def _fail(message: str, code: int = USAGE_ERROR) -> None:
    print(f"cfjax: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _is_fault(error: BaseException) -> bool:
    """A CheckpointError is a usage error (this workdir cannot serve this command) unless it is a
    `CheckpointFault` (a write failed, nothing reads back) or an OSError lies underneath it."""
    from cfjax.errors import CheckpointError, CheckpointFault

    if not isinstance(error, CheckpointError):
        return isinstance(error, OSError)
    return isinstance(error, CheckpointFault) or isinstance(error.__cause__, OSError)


def exit_code(error: BaseException) -> int | None:
    """The exit code of an error cfjax reports as one line; None for an unexpected error (a bug: its
    traceback is shown)."""
    from cfjax import interrupts
    from cfjax.errors import CheckpointError, ConfigError, DataError

    if isinstance(error, SystemExit | KeyboardInterrupt):
        return None  # already reported (flag errors), or not cfjax's to report
    train = sys.modules.get("cfjax.train")  # imported only once JAX may start
    if isinstance(error, interrupts.Interrupted) or (train and isinstance(error, train.Preempted)):
        return SIGNAL_BASE + error.signum
    if train and isinstance(error, train.NonFiniteError):
        return NON_FINITE
    if _is_fault(error):
        return FAULT
    if isinstance(error, (ConfigError, CheckpointError, DataError)):
        return USAGE_ERROR
    return None


def _message(error: BaseException) -> str:
    """The line printed for `error` (after "cfjax: ")."""
    from cfjax import interrupts

    train = sys.modules.get("cfjax.train")
    if train and isinstance(error, train.NonFiniteError):
        return f"training stopped: {error}"
    if train and isinstance(error, train.Preempted):
        return str(error)
    if isinstance(error, interrupts.Interrupted):
        return (f"{error}: stopped before finishing; nothing was left half-written, and the same command "
                "starts again (a training run resumes from its newest checkpoint)")
    return f"error: {error}"


def cpu_defaults(batch_size: int) -> None:
    """Before JAX starts: one XLA device per CPU core (up to 8, dividing the batch), a persistent
    compilation cache, unless the user set either, and freed host memory kept in the process
    (`host_memory`). On a 2-core CPU two devices ran a GAN step ~1.4x faster than one; devices of a GPU
    or TPU are unaffected."""
    from cfjax import host_memory

    host_memory.keep_freed_memory()
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in xla_flags:
        cores = min(os.cpu_count() or 1, 8)
        devices = max(d for d in range(1, cores + 1) if batch_size % d == 0)
        os.environ["XLA_FLAGS"] = f"{xla_flags} --xla_force_host_platform_device_count={devices}".strip()
    cache = os.path.join(os.path.expanduser("~"), ".cache", "cfjax", "jax_compilation_cache")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)


def distributed_settings(environ=os.environ) -> dict | None:
    """The arguments of `jax.distributed.initialize` from the flags, else the environment (the launcher
    `cfjax.launch` sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID); None for a single-process
    run. `--jax_distributed` alone gives {} (JAX detects a Cloud TPU, SLURM or Open MPI cluster itself)."""
    def value(flag, name, kind):
        if flag.value is not None:
            return flag.value
        text = environ.get(name)
        if text in (None, ""):
            return None
        try:
            return kind(text)
        except ValueError:
            _fail(f"${name}={text!r} is not a valid {kind.__name__}")

    address = value(_COORDINATOR, "JAX_COORDINATOR_ADDRESS", str)
    settings = {"coordinator_address": address, "num_processes": value(_NUM_PROCESSES, "JAX_NUM_PROCESSES", int),
                "process_id": value(_PROCESS_ID, "JAX_PROCESS_ID", int)}
    if address is None and not _DISTRIBUTED.value:
        if settings["num_processes"] not in (None, 1) or settings["process_id"] not in (None, 0):
            _fail("--num_processes/--process_id need --coordinator_address (or $JAX_COORDINATOR_ADDRESS) or "
                  "--jax_distributed")
        return None
    if address is not None and None in (settings["num_processes"], settings["process_id"]) and not _DISTRIBUTED.value:
        _fail("--coordinator_address needs --num_processes and --process_id (or $JAX_NUM_PROCESSES and "
              "$JAX_PROCESS_ID), or --jax_distributed to detect them")
    if settings["num_processes"] is not None and settings["process_id"] is not None \
            and settings["process_id"] >= settings["num_processes"]:
        _fail(f"--process_id={settings['process_id']} must be below --num_processes={settings['num_processes']}")
    heartbeat = value(_HEARTBEAT, "CFJAX_HEARTBEAT_TIMEOUT_S", int)
    if heartbeat is not None:
        settings["heartbeat_timeout_seconds"] = heartbeat
    return {name: v for name, v in settings.items() if v is not None}


def initialize_distributed() -> None:
    """`jax.distributed.initialize` for a multi-process run (nothing for a single process). On CPUs the
    processes exchange collectives through gloo (TCP)."""
    settings = distributed_settings()
    if settings is None:
        return
    import jax

    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # (the default since JAX 0.5; explicit)
    jax.distributed.initialize(**settings)
    from cfjax import interrupts, parallel

    # initialize() starts JAX's preemption notifier, whose own SIGTERM handler would swallow the signal;
    # cfjax's handlers take it back, and the processes agree on stop signals themselves (parallel.py).
    interrupts.install()
    interrupts.check()  # a signal that arrived while JAX connected
    parallel.connect_collectives()


def main(argv: list[str]) -> None:
    from cfjax import interrupts

    interrupts.install()  # first: Ctrl-C while JAX starts or compiles stops cleanly too (exit code 130)
    try:
        _main(argv)
    except BaseException as error:  # noqa: BLE001 (each known kind becomes one line and its exit code)
        code = exit_code(error)
        if code is None:
            raise
        print(f"cfjax: {_message(error)}", file=sys.stderr, flush=True)
        sys.exit(code)


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _PRINT_CONFIG.value and _MODE.value == "train":
        print(_CONFIG.value)  # nothing else: no JAX, no workdir
        return
    if _CONFIG.value is not None:
        cpu_defaults(_CONFIG.value.batch_size)
    import jax  # after flag parsing and cpu_defaults, which must precede JAX's start

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax and jax.distributed are chatty at INFO
    initialize_distributed()
    if _MODE.value == "train" or jax.process_count() == 1:
        _run()
    elif jax.process_index() == 0:
        _sharing_outcome(_run)
    else:
        _wait_for_process_zero()


def _run() -> None:
    import jax

    from cfjax import train
    from cfjax.errors import ConfigError

    workdir = _WORKDIR.value or os.path.join("runs", _CONFIG.value.name)
    config = _CONFIG.value
    if _MODE.value != "train":
        from cfjax.config.resolve import for_saved_run

        if os.path.isfile(workdir):
            raise ConfigError(f"--workdir={workdir} is a file, not a trained run's folder")

        config = for_saved_run(workdir, config)  # the run's own config, with these evaluation settings
    if _PRINT_CONFIG.value:
        print(config)
        return
    devices = jax.device_count() if _MODE.value == "train" else jax.local_device_count()  # (saved_runs.py)
    print(f"cfjax: config {config.name} on {devices} {jax.default_backend()} device(s); "
          f"workdir {workdir}", flush=True)
    if _MODE.value == "explain":
        _explain(config, workdir)
    elif _MODE.value == "attack":
        _attack(config, workdir)
    elif _MODE.value == "predict":
        _predict(config, workdir)
    else:
        train.train_and_evaluate(config, workdir)


def _sharing_outcome(run) -> None:
    """Process 0 of a multi-process --mode=explain|attack|predict: it alone restores the run and computes, on
    its own devices (no collective: nothing can wait on another process), writes each output file once,
    and then tells the waiting processes its exit code and last line (docs/multihost.md)."""
    from cfjax import parallel

    try:
        run()
    except BaseException as error:  # noqa: BLE001 (re-raised: main() reports it here as usual)
        code = exit_code(error)
        if isinstance(error, SystemExit):
            code, line = (error.code if isinstance(error.code, int) else 1), "error: process 0 stopped"
        elif code is None:
            code, line = 1, f"error: process 0 failed ({type(error).__name__}; its traceback is in its output)"
        else:
            line = _message(error)
        parallel.share_outcome(code, line)
        raise
    parallel.share_outcome(0, "")


def _wait_for_process_zero() -> None:
    """Every process but 0 of a multi-process --mode=explain|attack|predict: wait for process 0, then end
    as it ended (the same exit code and line)."""
    import jax

    from cfjax import parallel

    print(f"cfjax: --mode={_MODE.value} runs in process 0 of {jax.process_count()}, on its own devices; "
          f"process {jax.process_index()} waits for it", flush=True)
    code, line = parallel.wait_for_outcome()
    if code:
        print(f"cfjax: {line}", file=sys.stderr, flush=True)
        sys.exit(code)


def _explain(config, workdir: str) -> None:
    from cfjax.explain.run import explain

    results = explain(config, workdir, folder=_FOLDER.value, mask_threshold=_MASK_THRESHOLD.value,
                      crack_value=_CRACK_VALUE.value, out_dir=_OUT.value, eval_data=_EVAL_DATA.value)
    out = results["out_dir"]
    with open(os.path.join(out, "explain.md")) as f:
        print(f.read())
    print(f"cfjax: wrote {os.path.join(out, 'explain.json')}, explain.md and figures in {out}", flush=True)


def _attack(config, workdir: str) -> None:
    from cfjax.robustness.run import attack

    results = attack(config, workdir, transfer_from=_TRANSFER_FROM.value, out_dir=_OUT.value)
    with open(results["files"]["table"]) as f:
        print(f.read())
    print(f"cfjax: wrote {os.path.join(results['out_dir'], 'robustness.json')}, robustness.md and plots in "
          f"{results['out_dir']}", flush=True)


def _predict(config, workdir: str) -> None:
    from cfjax.predict.run import predict

    summary = predict(config, workdir, _FOLDER.value, out_dir=_OUT.value, abstain_threshold=_ABSTAIN_THRESHOLD.value)
    counts, out = summary["counts"], summary["out_dir"]
    abstain = summary["abstain"]
    print(f"cfjax: {counts['predicted']} of {counts['photos_found']} photos predicted ({summary['resumed']} already "
          f"done), {counts['skipped']} skipped, {counts['abstained']} abstained; abstain threshold "
          f"{abstain['threshold']} ({abstain['rule']})", flush=True)
    for skipped in summary["skipped"]:
        print(f"cfjax: skipped {skipped['path']}: {skipped['reason']}", flush=True)
    print(f"cfjax: wrote predictions.csv, predictions.jsonl, summary.json and report.html in {out}", flush=True)


if __name__ == "__main__":
    from cfjax import interrupts

    interrupts.install()  # before flag parsing, which reads the config file
    try:
        app.run(main, flags_parser=parse_flags)
    except interrupts.Interrupted as stop:  # while the flags were parsed (main reports its own)
        print(f"cfjax: {_message(stop)}", file=sys.stderr, flush=True)
        sys.exit(SIGNAL_BASE + stop.signum)
