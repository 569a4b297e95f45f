"""One writer per workdir and per analysis output folder (`cfjax.workdir_lock`): a second holder is refused
at once with the first one named, and a holder killed with SIGKILL leaves no stuck lock."""

import os
import signal
import subprocess
import sys

import pytest

from cfjax import errors, workdir_lock


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with workdir_lock.held(str(tmp_path)):
        with pytest.raises(workdir_lock.WorkdirInUse, match=rf"{tmp_path} is in use by another training run \(pid "
                                                            rf"{os.getpid()} on host .*, started .*, command: "):
            with workdir_lock.held(str(tmp_path)):
                pass
    with workdir_lock.held(str(tmp_path)):  # released at the end of the block
        pass
    assert issubclass(workdir_lock.WorkdirInUse, errors.CheckpointError)  # the CLI's one line, exit code 2


def test_an_output_folder_is_created_and_held_by_one_analysis(tmp_path):
    out = tmp_path / "runs" / "attack"
    with workdir_lock.output_held(str(out)):
        assert (out / workdir_lock.LOCK_NAME).is_file()
        with pytest.raises(workdir_lock.WorkdirInUse, match=rf"{out} is in use by another analysis \(pid "
                                                            rf"{os.getpid()} .*; wait for it to finish, stop it, or "
                                                            "use another --out"):
            with workdir_lock.output_held(str(out)):
                pass
        with workdir_lock.output_held(str(tmp_path / "elsewhere")):  # another folder: free
            pass
    with workdir_lock.output_held(str(out)):  # released at the end of the block
        pass
    assert not (tmp_path / "not_primary").exists()
    with workdir_lock.output_held(str(tmp_path / "not_primary"), enabled=False):
        assert not (tmp_path / "not_primary").exists()  # other processes of a multi-host run neither create nor lock


@pytest.mark.subprocess
def test_a_sigkilled_holder_leaves_no_stuck_lock(tmp_path, repo_root):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from cfjax import workdir_lock\n"
         f"with workdir_lock.held({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
        cwd=repo_root, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(workdir_lock.WorkdirInUse, match=rf"\(pid {holder.pid} on host"):
            with workdir_lock.held(str(tmp_path)):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    with workdir_lock.held(str(tmp_path)):  # the kernel released it: the same command can resume
        pass
