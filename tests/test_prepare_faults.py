"""`prepare` killed, interrupted, or its output damaged afterwards: a dataset is complete or absent,
never half; a killed run's scratch folder is swept by the next; a damaged file is named at open time
with the command that prepares it again."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from cfjax.data import prepare as prepare_lib
from cfjax.data import sources
from cfjax.errors import DataError

DATASET = "crack_segmentation/folder"


def _folder(root, count, size=160):
    rng = np.random.default_rng(count)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = rng.integers(90, 200, (size, size, 3), np.uint8)
        mask = np.zeros((size, size), np.uint8)
        row = int(rng.integers(8, size - 8))
        image[row:row + 3] //= 3
        mask[row:row + 3] = 255
        Image.fromarray(image).save(root / "images" / f"{i}.png", compress_level=0)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png", compress_level=0)
    return root


def _scratch(data_dir):
    return sorted(p for p in os.listdir(data_dir) if p.startswith(prepare_lib.SCRATCH_PREFIX))


def _target(data_dir):
    return data_dir / "crack_segmentation" / "folder" / "1.0.0"


# Runs prepare and SIGKILLs itself at a chosen point: after the Nth image read, or right after one of
# the two renames that swap the new dataset in.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from cfjax.data import prepare
    from cfjax.data.builders import files
    point, manual, data_dir, overwrite = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if point.startswith("read:"):
        reads, limit, read = [0], int(point[5:]), files.read_image
        def counting(path):
            reads[0] += 1
            if reads[0] > limit:
                die()
            return read(path)
        files.read_image = counting
    else:
        rename = os.rename
        def renaming(source, target):
            rename(source, target)
            if (point == "after_aside" and str(target).endswith("previous")) or \\
               (point == "after_move" and str(target).endswith("1.0.0") and "incomplete" not in source):
                die()
        os.rename = renaming
    prepare.prepare("crack_segmentation/folder", manual, data_dir, overwrite=overwrite)
""")


def _killed_prepare(point, manual, data_dir, overwrite=False):
    proc = subprocess.run([sys.executable, "-c", KILLER, point, str(manual), str(data_dir), str(int(overwrite))],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _complete(data_dir):
    builder = sources.open_builder(DATASET, str(data_dir))
    assert (_target(data_dir) / prepare_lib.SUMMARY_FILE).exists()
    for split in builder.info.splits:
        source = sources.RecordSource(builder, split, DATASET)
        assert len(source) == builder.info.splits[split].num_examples
        source[0]
    return builder


@pytest.mark.subprocess
def test_a_killed_prepare_leaves_the_dataset_complete_or_absent_and_the_next_run_sweeps(tmp_path):
    manual = _folder(tmp_path / "files", 8)
    data_dir = tmp_path / "data"
    _killed_prepare("read:5", manual, data_dir)  # mid-build
    assert len(_scratch(data_dir)) == 1 and not _target(data_dir).exists()
    prepare_lib.prepare(DATASET, str(manual), str(data_dir))
    assert _scratch(data_dir) == []
    _complete(data_dir)

    _killed_prepare("after_move", manual, data_dir, overwrite=True)  # the new dataset is in: with its summary
    assert len(_scratch(data_dir)) == 1
    _complete(data_dir)
    prepare_lib.prepare(DATASET, str(manual), str(data_dir))  # already prepared: sweeps, keeps it
    assert _scratch(data_dir) == []
    _complete(data_dir)

    _killed_prepare("after_aside", manual, data_dir, overwrite=True)  # old one set aside, new one not in
    assert not _target(data_dir).exists()
    assert prepare_lib.sweep_scratch(str(data_dir))  # puts the old dataset back
    assert _scratch(data_dir) == []
    _complete(data_dir)


def test_a_live_builds_scratch_folder_is_not_swept(tmp_path):
    live = tmp_path / f"{prepare_lib.SCRATCH_PREFIX}live"
    live.mkdir()
    prepare_lib._write_owner(str(live), str(tmp_path / "target"))  # this process: alive
    fresh_unowned = tmp_path / f"{prepare_lib.SCRATCH_PREFIX}unowned"
    fresh_unowned.mkdir()  # an older cfjax's, or one just created: kept for an hour
    assert prepare_lib.sweep_scratch(str(tmp_path)) == []
    old = time.time() - 2 * 3600
    os.utime(fresh_unowned, (old, old))
    assert prepare_lib.sweep_scratch(str(tmp_path)) == [str(fresh_unowned)]
    assert live.exists()


def test_a_truncated_dataset_file_is_named_with_the_command_to_prepare_again(tmp_path, tiny_config):
    manual = _folder(tmp_path / "files", 4)
    prepare_lib.prepare(DATASET, str(manual), str(tmp_path / "data"))
    config = tiny_config
    config.data.name, config.data.data_dir, config.data.view = DATASET, str(tmp_path / "data"), "full"
    split = "train"
    path = _target(tmp_path / "data") / f"crack_segmentation-{split}.array_record-00000-of-00001"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"the prepared dataset {DATASET} is damaged: {path} cannot be read "
                                        rf"\(truncated .*; prepare it again with python -m cfjax.data.prepare "
                                        rf"--dataset={DATASET} --manual_dir=PATH_TO_FILES .*--overwrite"):
        sources.open_split(config, split).examples[0]


@pytest.mark.subprocess
@pytest.mark.slow
def test_ctrl_c_stops_prepare_cleanly_with_code_130_and_no_scratch(tmp_path, repo_root):
    manual = _folder(tmp_path / "files", 150, size=256)
    data_dir = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    proc = subprocess.Popen([sys.executable, "-m", "cfjax.data.prepare", f"--dataset={DATASET}",
                             f"--manual_dir={manual}", f"--data_dir={data_dir}"], cwd=repo_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (data_dir.exists() and _scratch(data_dir)) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(2.0)  # inside the build
        assert proc.poll() is None, "prepare finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "cfjax.data.prepare: stopped by SIGINT; the unfinished build was removed" in stderr
    assert "Traceback" not in stderr
    assert _scratch(data_dir) == [] and not _target(data_dir).exists()
