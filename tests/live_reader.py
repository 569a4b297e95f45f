"""A reader polling a live run, for tests/test_live_workdir.py: `python tests/live_reader.py WORKDIR OUT STOP`
calls `cfjax.restore(WORKDIR)` and `.classify` on 4 images every 0.2 s until the file STOP exists, then
writes OUT (JSON): polls, successes, the steps read, each kind of CheckpointError seen (with one example),
and the traceback of anything else (which fails the test). Exceptions Python can only report, not raise
(orbax's background asyncio callbacks after a read that failed: "Event loop is closed"), are recorded by
kind under "unraisable" instead of printed, so that any traceback on stderr is a real failure."""

import json
import os
import re
import sys
import time
import traceback

import numpy as np


def main(workdir: str, out: str, stop: str) -> None:
    import cfjax
    from cfjax.errors import CheckpointError

    record = {"polls": 0, "successes": 0, "steps": [], "errors": {}, "tracebacks": [], "poll_s": [],
              "unraisable": {}}

    def unraisable(report) -> None:
        kind = f"{type(report.exc_value).__name__}: {report.exc_value}"[:120]
        record["unraisable"][kind] = record["unraisable"].get(kind, 0) + 1

    sys.unraisablehook = unraisable
    rng = np.random.default_rng(0)
    while not os.path.exists(stop):
        record["polls"] += 1
        start = time.time()
        try:
            run = cfjax.restore(workdir)
            size = run.config.data.image_size
            classes = run.classify(rng.random((4, size, size, 3), dtype=np.float32))
            assert classes.shape == (4,), classes.shape
            record["successes"] += 1
            record["steps"].append(run.step)
        except CheckpointError as error:
            kind = re.sub(r"\d+", "N", str(error).split(f" in {os.path.abspath(workdir)}")[0])[:80]
            seen = record["errors"].setdefault(kind, {"count": 0, "example": str(error)[:400]})
            seen["count"] += 1
        except Exception:  # noqa: BLE001 (anything but a CheckpointError is a failure, reported in full)
            record["tracebacks"].append(traceback.format_exc())
        record["poll_s"].append(round(time.time() - start, 3))
        time.sleep(0.2)
    with open(out, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
