"""cfjax: counterfactual GANs whose discriminator is the classifier (Bischof et al. 2023).

`cfjax.restore(workdir)` loads a trained run for analysis (a `RestoredRun`, see `cfjax.restored_run`); it
is imported on first use, so `import cfjax` stays light.
"""

from cfjax.version import __version__

__all__ = ["RestoredRun", "__version__", "restore"]


def __getattr__(name: str):
    if name in ("restore", "RestoredRun"):
        from cfjax import restored_run

        return getattr(restored_run, name)
    raise AttributeError(f"module 'cfjax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
