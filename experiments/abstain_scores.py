"""How well each abstain score of `--mode=predict` transfers from validation to test (docs/predicting.md).

    PYTHONPATH=. python experiments/abstain_scores.py --workdirs=runs/fruits_detector_s0,runs/sut_s0

For each run and each score it can abstain on (p_fake, 1 − confidence), the threshold `abstain_rule` picks on
the validation split (the largest coverage whose kept error is at most half the validation error), then the
coverage and the error on kept images of the run's test split at that threshold, and which score "auto"
picks. Writes experiments/results/abstain_scores.{json,md} (or --out).
"""

import argparse
import json
import os

import numpy as np

import cfjax
from cfjax.data import pipeline
from cfjax.predict import abstain


def measure(workdir: str) -> dict:
    """{score: validation threshold and figures, test coverage and kept error at it}, and the auto choice."""
    run = cfjax.restore(workdir)
    test = pipeline.evaluation_arrays(run.config, "test")
    probabilities = np.asarray(run.probabilities(test["image"]))
    wrong = probabilities.argmax(-1) != np.asarray(test["label"])
    values = {"p_fake": lambda: np.asarray(run.p_fake(test["image"])),
              "uncertainty": lambda: 1.0 - probabilities.max(-1)}
    rows = {}
    auto = abstain.abstain_rule(run, run.config)  # one validation pass: it tries every score the run offers
    for score, rule in auto.get("scores", {}).items():
        kept = values[score]() <= rule["threshold"] if rule["threshold"] is not None else np.ones(len(wrong), bool)
        rows[score] = {"threshold": rule["threshold"], "validation_coverage": rule.get("coverage"),
                       "validation_kept_error": rule.get("kept_error"),
                       "validation_error": rule.get("validation_error"),
                       "test_coverage": float(kept.mean()), "test_error": float(wrong.mean()),
                       "test_kept_error": float(wrong[kept].mean()) if kept.any() else None}
    return {"scores": rows, "auto": auto["score"], "step": run.step}


def _cell(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdirs", required=True, help="comma-separated run folders")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    results = {workdir: measure(workdir) for workdir in args.workdirs.split(",")}
    lines = ["| run | score | τ (validation) | validation: coverage | kept error (all) | test: coverage | "
             "kept error (all) | auto picks |", "|---|---|---|---|---|---|---|---|"]
    for workdir, result in results.items():
        for score, row in result["scores"].items():
            lines.append(f"| {os.path.basename(os.path.normpath(workdir))} | {score} | {_cell(row['threshold'])} | "
                         f"{_cell(row['validation_coverage'])} | {_cell(row['validation_kept_error'])} "
                         f"({_cell(row['validation_error'])}) | {_cell(row['test_coverage'])} | "
                         f"{_cell(row['test_kept_error'])} ({_cell(row['test_error'])}) | "
                         f"{'yes' if result['auto'] == score else ''} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "abstain_scores.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "abstain_scores.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(text)


if __name__ == "__main__":
    main()
