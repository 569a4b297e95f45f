"""The package version, in a module of its own so that modules inside cfjax (checkpoints, reports)
can record it without importing the package root."""

__version__ = "0.2.0"
