"""The modes that read a trained run (`--mode=explain|attack|predict`): each runs its library function and
prints what it wrote. In a multi-process job process 0 alone runs them, on its own devices, and the other
processes wait for its outcome (docs/multihost.md)."""

import os
import sys
from collections.abc import Callable

import ml_collections

from cfjax.cli import exit_codes


def explain(config: ml_collections.ConfigDict, workdir: str, **options) -> None:
    """`cfjax.explain.run.explain` with the CLI's options; prints the table and where it went."""
    from cfjax.explain.run import explain as run_explain

    out = run_explain(config, workdir, **options)["out_dir"]
    _report(os.path.join(out, "explain.md"), f"{os.path.join(out, 'explain.json')}, explain.md and figures in {out}")


def attack(config: ml_collections.ConfigDict, workdir: str, **options) -> None:
    """`cfjax.robustness.run.attack` with the CLI's options; prints the table and where it went."""
    from cfjax.robustness.run import attack as run_attack

    results = run_attack(config, workdir, **options)
    out = results["out_dir"]
    _report(results["files"]["table"], f"{os.path.join(out, 'robustness.json')}, robustness.md and plots in {out}")


def _report(table: str, written: str) -> None:
    """The mode's markdown table, then where its outputs went."""
    with open(table) as f:
        print(f.read())
    print(f"cfjax: wrote {written}", flush=True)


def _abstain_rule(abstain: dict) -> str:
    if abstain["score"] is None or abstain["threshold"] is None:
        return abstain["rule"]
    return f"when {abstain['score']} > {abstain['threshold']:.4g} ({abstain['rule']})"


def predict(config: ml_collections.ConfigDict, workdir: str, folder: str, **options) -> None:
    """`cfjax.predict.run.predict` with the CLI's options; prints the counts (each skipped file and why is
    printed as it is met, and listed in summary.json)."""
    from cfjax.predict.run import predict as run_predict

    summary = run_predict(config, workdir, folder, **options)
    counts, out = summary["counts"], summary["out_dir"]
    abstain = summary["abstain"]
    print(f"cfjax: {counts['predicted']} of {counts['photos_found']} photos predicted ({summary['resumed']} already "
          f"done), {counts['skipped']} skipped, {counts['abstained']} abstained; abstain: {_abstain_rule(abstain)}",
          flush=True)
    others = summary["not_images"]
    if others["count"]:
        more = ", ..." if others["count"] > len(others["examples"]) else ""
        print(f"cfjax: {others['count']} other file(s) not read, not of a type read here "
              f"({' '.join(others['read_types'])}): {', '.join(others['examples'])}{more}", flush=True)
    print(f"cfjax: wrote predictions.csv, predictions.jsonl, summary.json and report.html in {out}", flush=True)


def in_process_zero(run: Callable[[], None]) -> None:
    """Process 0 of a multi-process job: `run()` alone restores the run and computes, on its own devices
    (no collective: nothing can wait on another process), writes each output file once, and then tells
    the waiting processes its exit code and last line."""
    from cfjax import parallel

    try:
        run()
    except BaseException as error:  # noqa: BLE001 (re-raised: the CLI reports it here as usual)
        code = exit_codes.exit_code(error)
        if isinstance(error, SystemExit):
            code, line = (error.code if isinstance(error.code, int) else 1), "error: process 0 stopped"
        elif code is None:
            code, line = 1, f"error: process 0 failed ({type(error).__name__}; its traceback is in its output)"
        else:
            line = exit_codes.message(error)
        parallel.share_outcome(code, line)
        raise
    parallel.share_outcome(0, "")


def wait_for_process_zero(mode: str) -> None:
    """Every process but 0 of a multi-process job: wait for process 0, then end as it ended (the same exit
    code and line)."""
    import jax

    from cfjax import parallel

    print(f"cfjax: --mode={mode} runs in process 0 of {jax.process_count()}, on its own devices; "
          f"process {jax.process_index()} waits for it", flush=True)
    code, line = parallel.wait_for_outcome()
    if code:
        print(f"cfjax: {line}", file=sys.stderr, flush=True)
        sys.exit(code)
