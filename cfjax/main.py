"""Command line: `python -m cfjax.main --config=configs/cracks.py [--workdir=DIR] [--config.FIELD=VALUE ...]`.

Only parses flags and calls `train.train_and_evaluate(config, workdir)` (flax/examples style), or on a
trained run, `explain.run.explain(config, workdir, ...)` (`--mode=explain`) or
`robustness.run.attack(config, workdir, ...)` (`--mode=attack`) or `predict.run.predict(config, workdir,
folder, ...)` (`--mode=predict`), through `cli.modes`. Those read the run's saved config;
a `--config` given with them sets only its evaluation sections (and where the data is on this machine).
Exit codes and error lines: `cli.exit_codes`; device defaults and multi-process start: `cli.startup`.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cfjax.cli import exit_codes, modes, startup

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
_ABSTAIN_THRESHOLD = flags.DEFINE_float("abstain_threshold", None, "--mode=predict: abstain when the abstain score "
                                        "is above this (default: chosen on the run's validation split).")
_ABSTAIN_SCORE = flags.DEFINE_enum("abstain_score", "auto", ["auto", "p_fake", "uncertainty"],
                                   "--mode=predict: abstain on p_fake, on 1 - the class's probability, or (auto) on "
                                   "whichever keeps more validation images (docs/predicting.md).")
_SALIENCY_THRESHOLD = flags.DEFINE_float("saliency_threshold", None, "--mode=predict: mask where the map is above "
                                         "this (default: the U-Net's 0.5, the threshold --mode=explain tuned, "
                                         "else each photo's Otsu threshold).")
_MASK_THRESHOLD = flags.DEFINE_integer("mask_threshold", 127, "--folder masks: damage where the mask is above this.",
                                       lower_bound=0, upper_bound=254)
_CRACK_VALUE = flags.DEFINE_integer("crack_value", None, "--folder masks: damage where the mask equals this value "
                                    "(label maps); overrides --mask_threshold.", lower_bound=0, upper_bound=255)
_OUT = flags.DEFINE_string("out", None, "--mode=explain|attack|predict: output folder (default "
                           "WORKDIR/explain[_FOLDER], WORKDIR/attack or WORKDIR/predict_FOLDER).")
_TRANSFER_FROM = flags.DEFINE_string("transfer_from", None, "--mode=attack: another run's workdir whose models craft "
                                     "transfer attacks on this run's (a gradient-masking check).")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "--mode=attack: the split attacked; validation "
                           "to choose between runs or settings without reading the test split.")
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "Print the resolved config (after overrides and, for "
                                   "--mode=explain|attack, merged into the run's saved one) and exit.")

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
        if _SPLIT.value != "test" and _MODE.value != "attack":
            _fail("--split is for --mode=attack: the split a trained run is attacked on")
        if _SALIENCY_THRESHOLD.value is not None and _MODE.value != "predict":
            _fail("--saliency_threshold is for --mode=predict: --mode=explain tunes its threshold on validation")
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


def _fail(message: str, code: int = exit_codes.USAGE_ERROR) -> None:
    print(f"cfjax: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def main(argv: list[str]) -> None:
    from cfjax import interrupts

    interrupts.install()  # first: Ctrl-C while JAX starts or compiles stops cleanly too (exit code 130)
    try:
        _main(argv)
    except BaseException as error:  # noqa: BLE001 (each known kind becomes one line and its exit code)
        code = exit_codes.exit_code(error)
        if code is None:
            raise
        print(f"cfjax: {exit_codes.message(error)}", file=sys.stderr, flush=True)
        sys.exit(code)


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _PRINT_CONFIG.value and _MODE.value == "train":
        print(_CONFIG.value)  # nothing else: no JAX, no workdir
        return
    if _CONFIG.value is not None:
        startup.cpu_defaults(_CONFIG.value.batch_size)
    import jax  # after flag parsing and cpu_defaults, which must precede JAX's start

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax and jax.distributed are chatty at INFO
    startup.initialize_distributed(startup.distributed_settings(
        coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
        heartbeat_timeout_s=_HEARTBEAT.value, detect=_DISTRIBUTED.value))
    if _MODE.value == "train" or jax.process_count() == 1:
        _run()
    elif jax.process_index() == 0:
        modes.in_process_zero(_run)
    else:
        modes.wait_for_process_zero(_MODE.value)


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
        modes.explain(config, workdir, folder=_FOLDER.value, mask_threshold=_MASK_THRESHOLD.value,
                      crack_value=_CRACK_VALUE.value, out_dir=_OUT.value, eval_data=_EVAL_DATA.value)
    elif _MODE.value == "attack":
        modes.attack(config, workdir, transfer_from=_TRANSFER_FROM.value, out_dir=_OUT.value, split=_SPLIT.value)
    elif _MODE.value == "predict":
        modes.predict(config, workdir, _FOLDER.value, out_dir=_OUT.value, abstain_threshold=_ABSTAIN_THRESHOLD.value,
                      abstain_score=_ABSTAIN_SCORE.value, saliency_threshold=_SALIENCY_THRESHOLD.value)
    else:
        train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    from cfjax import interrupts

    interrupts.install()  # before flag parsing, which reads the config file
    try:
        app.run(main, flags_parser=parse_flags)
    except interrupts.Interrupted as stop:  # while the flags were parsed (main reports its own)
        print(f"cfjax: {exit_codes.message(stop)}", file=sys.stderr, flush=True)
        sys.exit(exit_codes.SIGNAL_BASE + stop.signum)
