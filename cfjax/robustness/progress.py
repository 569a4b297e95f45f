"""The finished attack settings of a `--mode=attack` run, kept on disk so that a rerun after an
interruption resumes instead of starting over (the ensemble sweeps of one model take hours on a 2-core CPU).

Each setting's per-example outputs go to `<out_dir>/partial/<key>.npz`, written atomically as soon as the
setting is done. The key hashes everything the outputs depend on: the run (config name, checkpoint step),
the data (split, number of images), the attack's seed, batch size and adaptive weight, the attacked and
source models, the setting itself and cfjax's version. Anything else reads as not done. The folder is
removed once robustness.json is written.
"""

import hashlib
import io
import json
import os
import shutil

import numpy as np

from cfjax import storage
from cfjax.robustness.protocols import AttackSetting


class SweepProgress:
    """Saved outputs of finished settings for one attack run (`folder=None`: keep nothing)."""

    def __init__(self, folder: str | None, run_identity: dict):
        self.folder, self.run_identity = folder, run_identity

    def _path(self, model: str, source: str, setting: AttackSetting) -> str:
        key = json.dumps({"run": self.run_identity, "model": model, "source": source,
                          "setting": setting.describe()}, sort_keys=True, default=str)
        return os.path.join(self.folder, hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")

    def load(self, model: str, source: str, setting: AttackSetting) -> dict | None:
        """The outputs saved for this setting, or None (not done, no folder, or an unreadable file)."""
        if self.folder is None:
            return None
        try:
            with np.load(self._path(model, source, setting)) as saved:
                return {name: saved[name] for name in saved.files}
        except (OSError, ValueError, EOFError):
            return None

    def save(self, model: str, source: str, setting: AttackSetting, outputs: dict) -> None:
        """Keep one finished setting's outputs (atomically: a crash mid-write leaves the setting not done)."""
        if self.folder is None:
            return
        storage.make_dirs(self.folder)
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        storage.write_bytes_atomic(self._path(model, source, setting), buffer.getvalue())

    def clear(self) -> None:
        """Remove the folder once the results it served are written."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
