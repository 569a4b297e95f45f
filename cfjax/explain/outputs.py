"""Where `--mode=explain` writes when no `--out` is given, in one place for its writer (`explain.run`) and
its readers (`cfjax.restore`'s tuned mask threshold): WORKDIR/explain for the run's own test split,
WORKDIR/explain_<name> for a folder (`--folder`) or another dataset (`--eval_data`). Every one of them
tunes its thresholds on the run's own validation split. No dependencies: restoring a run imports it."""

import os

OWN = "explain"


def for_folder(folder: str) -> str:
    """WORKDIR/explain_<the folder's last component>."""
    return f"{OWN}_{os.path.basename(os.path.normpath(folder))}"


def for_dataset(target: str) -> str:
    """WORKDIR/explain_<the target's name, with "/" made a filename character>."""
    return f"{OWN}_" + target.replace("/", "_").replace(os.sep, "_")


def in_workdir(workdir: str) -> list[str]:
    """The default explain folders a workdir may hold, its own test split's first, then the others by name
    (those present or not: a reader opens each and skips what is missing). A workdir that cannot be listed
    gives the first alone."""
    try:
        names = os.listdir(workdir)
    except OSError:
        names = []
    return [OWN, *sorted(name for name in names if name.startswith(f"{OWN}_"))]
