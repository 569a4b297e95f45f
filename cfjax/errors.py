"""The error a bad config raises, in a module of its own: low-level modules (`parallel`) raise it without
importing the validation, which imports the packages they serve."""


class ConfigError(ValueError):
    """A config field has a value cfjax cannot run with."""
