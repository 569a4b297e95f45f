"""The errors cfjax reports to a user as one line (the CLI prints the message and exits with code 2):
each message names the field, file or folder at fault and what to do. Lowest module of the package,
so any layer can raise them."""


class ConfigError(ValueError):
    """A config field has a value cfjax cannot run with."""


class DataError(ValueError):
    """Input data cannot be used; the message names the file or folder and what is wrong."""


class ManualDirError(DataError):
    """The manual download folder is missing or lacks the expected files."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used with this run; the message says why and what to do."""
