"""experiments/job_batch.py: jobs run side by side until the budget, the rest are stopped with time to save, and
the records, logs and unfinished runs are packed (how the H200 seeds of docs/robustness.md were trained)."""

import os
import tarfile
import time

import pytest
from conftest import experiment_script


def _names(path) -> set[str]:
    with tarfile.open(path) as tar:
        return set(tar.getnames())


@pytest.mark.subprocess
def test_jobs_run_together_until_the_budget_then_are_stopped_with_time_to_save_and_packed(tmp_path):
    runs, results, pack = tmp_path / "runs", tmp_path / "results", tmp_path / "pack"
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text(
        "# a comment, then three jobs; two run at once\n"
        "quick: mkdir -p {out}/runs/r1 {runs}/done/checkpoints {runs}/done/attack"
        " && echo {} > {out}/runs/r1/attack.json && echo {} > {runs}/done/attack/robustness.json && echo quick done\n"
        "slow: mkdir -p {runs}/slow/checkpoints && echo x > {runs}/slow/checkpoints/1 && echo i > {runs}/slow/a.png"
        " && bash -c 'trap \"echo saved > {runs}/slow/saved.log; exit 143\" TERM; sleep 100 & wait'\n"
        "third: echo third ran\n")
    with experiment_script("job_batch") as job_batch:
        started = time.monotonic()
        jobs = job_batch.run_batch(job_batch.read_jobs(str(jobs_file)), runs=str(runs), results=str(results),
                                   pack_dir=str(pack), budget_s=4.0, parallel=2, grace_s=10.0, poll_s=0.2,
                                   pack_every_s=1.0)
        took = time.monotonic() - started
    outcomes = {job.name: job.outcome for job in jobs}
    assert outcomes == {"quick": "finished, exit code 0", "third": "finished, exit code 0",
                        "slow": "stopped at the budget"}, outcomes
    assert took < 4.0 + 10.0, took  # the slow job saved and ended on SIGTERM, well inside the grace time
    assert (runs / "slow" / "saved.log").read_text().strip() == "saved"  # the signal reached the job's children
    assert "quick/runs/r1/attack.json" in _names(pack / "records.tgz")
    assert {"jobs/quick.log", "jobs/third.log", "runs/slow/saved.log"} <= _names(pack / "logs.tgz")
    unfinished = _names(pack / "unfinished.tgz")
    assert "slow/checkpoints/1" in unfinished and "slow/a.png" not in unfinished  # no images
    assert not any(name.startswith("done") for name in unfinished)  # analysed: not packed
    assert sorted(os.listdir(pack)) == ["logs.tgz", "records.tgz", "unfinished.tgz"]  # no partial files left


def test_a_jobs_file_with_a_malformed_line_or_a_name_twice_is_refused_with_its_line(tmp_path):
    with experiment_script("job_batch") as job_batch:
        for text, expected in (("a: echo 1\nno colon here\n", "jobs.txt:2: expected 'NAME: COMMAND'"),
                               ("a: echo 1\n# note\na: echo 2\n", "jobs.txt:3: job 'a' is named twice"),
                               ("# only a comment\n", "jobs.txt: no jobs")):
            (tmp_path / "jobs.txt").write_text(text)
            with pytest.raises(SystemExit, match=expected):
                job_batch.read_jobs(str(tmp_path / "jobs.txt"))


def test_only_runs_with_checkpoints_and_no_analysis_are_unfinished(tmp_path):
    for run, files in (("trained", ["checkpoints/3/x"]), ("attacked", ["checkpoints/3/x", "attack/robustness.json"]),
                       ("explained", ["checkpoints/3/x", "explain_other/explain.json"]), ("empty", ["train.log"])):
        for name in files:
            (tmp_path / run / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / run / name).write_text("{}")
    with experiment_script("job_batch") as job_batch:
        assert job_batch.unfinished_runs(str(tmp_path)) == ["trained"]
        assert job_batch.unfinished_runs(str(tmp_path / "nowhere")) == []
