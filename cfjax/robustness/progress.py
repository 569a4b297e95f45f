"""The finished attack settings of a `--mode=attack` run, kept on disk so that a rerun after an
interruption resumes instead of starting over (the ensemble sweeps of one model take hours on a 2-core CPU).

Each setting's per-example outputs go to `<out_dir>/partial/<key>.npz`, written atomically as soon as the
setting is done; an ensemble setting also keeps its state after every batch in `<key>.stage.npz` until
then. The key hashes everything the outputs depend on: the run (config name, checkpoint step),
the data (split, number of images), the attack's seed, batch size and adaptive weight, the attacked and
source models, the setting itself and cfjax's version. Anything else reads as not done. The folder is
removed once robustness.json is written.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import zipfile

import numpy as np

from cfjax import storage
from cfjax.robustness.protocols import AttackSetting

STAGE = ".stage.npz"  # the file name's end of an unfinished setting's state


class SweepProgress:
    """Saved outputs of finished settings for one attack run (`folder=None`: keep nothing)."""

    def __init__(self, folder: str | None, run_identity: dict):
        self.folder, self.run_identity = folder, run_identity

    def _path(self, model: str, source: str, setting: AttackSetting, suffix: str = ".npz") -> str:
        key = json.dumps({"run": self.run_identity, "model": model, "source": source,
                          "setting": setting.describe()}, sort_keys=True, default=str)
        return os.path.join(self.folder, hashlib.sha256(key.encode()).hexdigest()[:24] + suffix)

    def load(self, model: str, source: str, setting: AttackSetting) -> dict | None:
        """The outputs saved for this setting, or None (not done, no folder, or an unreadable file)."""
        return self._read(self._path(model, source, setting)) if self.folder is not None else None

    def save(self, model: str, source: str, setting: AttackSetting, outputs: dict) -> None:
        """Keep one finished setting's outputs (atomically: a crash mid-write leaves the setting not done);
        its stage file, if any, is no longer needed."""
        if self.folder is None:
            return
        self._write(self._path(model, source, setting), outputs)
        with contextlib.suppress(OSError):
            os.remove(self._path(model, source, setting, STAGE))

    def load_stage(self, model: str, source: str, setting: AttackSetting) -> dict | None:
        """The state an unfinished setting saved after its last batch (`EnsembleSweep.run`), or None."""
        return self._read(self._path(model, source, setting, STAGE)) if self.folder is not None else None

    def save_stage(self, model: str, source: str, setting: AttackSetting, state: dict) -> None:
        """Keep an unfinished setting's state, replacing the one before (atomically)."""
        if self.folder is not None:
            self._write(self._path(model, source, setting, STAGE), state)

    @staticmethod
    def _read(path: str) -> dict | None:
        try:
            with np.load(path) as saved:
                return {name: saved[name] for name in saved.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # absent, or damaged (cut short, not .npz)
            return None

    def _write(self, path: str, arrays: dict) -> None:
        storage.make_dirs(self.folder)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        storage.write_bytes_atomic(path, buffer.getvalue())

    def clear(self) -> None:
        """Remove the folder once the results it served are written."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
