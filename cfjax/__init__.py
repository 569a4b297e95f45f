"""cfjax: counterfactual GANs whose discriminator is the classifier (Bischof et al. 2023).

`cfjax.restore(workdir)` loads a trained run for analysis (see `cfjax.analysis`); it is imported on
first use, so `import cfjax` stays light.
"""

from cfjax.version import __version__
__all__ = ["Analysis", "__version__", "restore"]


def __getattr__(name: str):
    if name in ("restore", "Analysis"):
        from cfjax import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module 'cfjax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
