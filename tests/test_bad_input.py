"""Every row of the "Bad input" table in docs/reliability.md, run as the user would type it: exit code 2,
the row's message on stderr, no traceback, and nothing written into the fresh workdir."""

import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

TABLE_PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
COMMANDS = {"main": [sys.executable, "-m", "cfjax.main", "--config=configs/cracks.py:tiny", "--workdir=TMP/run"],
            "prepare": [sys.executable, "-m", "cfjax.data.prepare", "--data_dir=TMP/data"]}


def _rows() -> list[tuple[str, str, str]]:
    """(input, command, message) of each table row, with markdown's escaped pipes restored."""
    section = TABLE_PAGE.read_text().split("## Bad input", 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3 and cells[1].startswith("`"):
            rows.append(tuple(c.strip("`").replace("\\|", "|") for c in cells))
    return rows


ROWS = _rows()


def _png(path: pathlib.Path, shape) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random(shape) * 255).astype(np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The capitals of the table: a trained tiny run and the folders of bad files."""
    import cracks

    from cfjax import train

    root = tmp_path_factory.mktemp("bad_input")
    train.train_and_evaluate(cracks.get_config("tiny"), str(root / "trained"))
    # A run written by an older cfjax whose networks were shaped differently.
    shutil.copytree(root / "trained", root / "old")
    for metadata in (root / "old" / "checkpoints").glob("*/metadata/metadata"):
        saved = json.loads(metadata.read_text())
        saved["cfjax_version"], saved["config"]["generator"]["width"] = "0.1.0", 4
        metadata.write_text(json.dumps(saved))
    _png(root / "corrupt" / "masks" / "a.png", (32, 32))
    (root / "corrupt" / "images").mkdir()
    (root / "corrupt" / "images" / "a.png").write_bytes(b"not an image")
    _png(root / "bad_mask" / "images" / "a.png", (32, 32, 3))
    _png(root / "bad_mask" / "masks" / "a.png", (16, 16))
    _png(root / "zero_one" / "images" / "a.png", (32, 32, 3))
    (root / "zero_one" / "masks").mkdir()
    Image.fromarray(np.eye(32, dtype=np.uint8)).save(root / "zero_one" / "masks" / "a.png")  # 0/1, not 0/255
    _png(root / "empty_class" / "good" / "a.png", (8, 8, 3))
    (root / "empty_class" / "bad").mkdir()
    for name in ("broken", "truncated"):
        for cls in ("good", "bad"):
            for i in range(2):
                data = _png(root / name / cls / f"{i}.png", (64, 64, 3))
    (root / "broken" / "bad" / "broken.png").write_bytes(b"garbage")
    (root / "truncated" / "bad" / "cut.png").write_bytes(data[: len(data) // 2])
    return {**_live_run(root),
            "RUN": root / "trained", "OLD_RUN": root / "old", "CORRUPT_FOLDER": root / "corrupt",
            "BAD_MASK_FOLDER": root / "bad_mask", "ZERO_ONE_MASKS": root / "zero_one",
            "EMPTY_CLASS": root / "empty_class", "BROKEN_IMAGE": root / "broken",
            "TRUNCATED_IMAGE": root / "truncated"}


_HELD = []


def _live_run(root: pathlib.Path) -> dict:
    """LIVE_RUN: a workdir whose writer lock this test process holds, as a training run would, until it exits;
    BUSY_OUT: an output folder it holds as an attack would."""
    from cfjax import workdir_lock

    live, busy = root / "live", root / "busy_out"
    live.mkdir()
    for lock in (workdir_lock.held(str(live)), workdir_lock.output_held(str(busy))):
        lock.__enter__()
        _HELD.append(lock)
    return {"LIVE_RUN": live, "BUSY_OUT": busy}


def _substitute(text: str, places: dict) -> str:
    for name, path in sorted(places.items(), key=lambda item: -len(item[0])):  # TMP last: other names contain it
        text = re.sub(rf"\b{name}\b", str(path), text)
    return text


def test_the_table_covers_every_kind_of_input():
    assert len(ROWS) >= 20
    kinds = " ".join(row[0] for row in ROWS)
    for kind in ("unknown config field", "wrong type", "divisible", "ε < 0", "unknown dataset", "missing data folder",
                 "corrupt image", "truncated image", "wrong size", "empty class", "another config"):
        assert kind in kinds, kind


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("case, command, message", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_is_one_clear_line(places, tmp_path, repo_root, case, command, message):
    where = {**places, "TMP": tmp_path}
    program, *flags = command.split()
    argv = [_substitute(arg, where) for arg in COMMANDS[program] + flags]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(argv, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, (case, proc.returncode, proc.stderr[-2000:])
    assert _substitute(message, where).replace("\\n", "\n") in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written for the refused command
