"""What the notebooks in `experiments/` do besides training and analysis: size the batch to the devices,
show TensorBoard, and keep the workdir somewhere that outlives a Colab session (e.g. Google Drive).

Everything here also works outside Colab (the notebooks run in CI on CPU), doing the local equivalent.
"""

import os
import shutil
import sys

import jax
import ml_collections


def in_colab() -> bool:
    return "google.colab" in sys.modules


def scale_batch(config: ml_collections.ConfigDict, per_device_batch: int, device_count: int | None = None
                ) -> ml_collections.ConfigDict:
    """Set the training and evaluation batches to `per_device_batch` images on each device, so a config
    fills a TPU's 8 cores as it fills one GPU (learning rates are left as they are)."""
    if per_device_batch < 1:
        raise ValueError(f"per_device_batch must be at least 1; got {per_device_batch}")
    devices = jax.device_count() if device_count is None else device_count
    config.batch_size = per_device_batch * devices
    config.eval.batch_size = per_device_batch * devices
    return config


def show_tensorboard(logdir: str) -> None:
    """TensorBoard inline in Colab or Jupyter when the `tensorboard` package is present; else the command."""
    try:
        import tensorboard  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython else None
    if shell is None:
        print(f"TensorBoard is not available here; on a machine with it: tensorboard --logdir {logdir}")
        return
    shell.run_line_magic("load_ext", "tensorboard")
    shell.run_line_magic("tensorboard", f"--logdir {logdir}")


def save_workdir(workdir: str, destination: str) -> str:
    """Copy the run folder (checkpoints, logs, results, figures) into `destination`/<run folder name>,
    mounting Google Drive first when `destination` is under /content/drive in Colab; returns the copy.
    Files already there are overwritten; nothing there is deleted."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"{workdir} holds no checkpoints: nothing to save (train the run first)")
    if in_colab() and destination.startswith("/content/drive") and not os.path.isdir("/content/drive/MyDrive"):
        from google.colab import drive  # only importable in Colab

        drive.mount("/content/drive")
    target = os.path.join(destination, os.path.basename(os.path.normpath(workdir)))
    shutil.copytree(workdir, target, dirs_exist_ok=True)
    return target
