"""Scalars and images to a JSON-lines file and to TensorBoard event files (tensorboardX, no TensorFlow)."""

import json
import os

import numpy as np
from tensorboardX import SummaryWriter

from cfjax import storage


class MetricWriter:
    """Writes `metrics.jsonl` (one line per logged step) and TensorBoard events under `workdir/tb`."""

    def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        if not enabled:
            return
        _truncate_after(self.path, resume_step)
        self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step + 1 if resume_step else None)

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        """One log line of `values`; nested dicts (e.g. per-threshold scores) become "outer/inner" names,
        the layout TensorBoard groups by."""
        if not self.enabled:
            return
        record = {"step": int(step), **{prefix + k: _plain(v) for k, v in _flatten(values).items()}}
        storage.append_line(self.path, json.dumps(record))
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(name, value, step)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """An (H, W, 3) uint8 image."""
        if self.enabled:
            self._tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.enabled:
            self._tb.close()


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = value
    return flat


def _plain(value):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()


def _truncate_after(path: str, step: int) -> None:
    """On resume, drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
    storage.write_text_atomic(path, "".join(kept))
