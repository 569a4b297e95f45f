"""The errors cfjax reports to a user as one line, no traceback: each message names the field, file or
folder at fault and what to do. Lowest module of the package, so any layer can raise them.

The CLI (`cfjax.cli.exit_codes`) maps them to exit codes: usage errors (ConfigError, DataError: bad
flags, config or input data) exit with 2; faults of the machine or of saved files (StorageError,
CheckpointError) exit with 3 (docs/reliability.md#exit-codes)."""


class ConfigError(ValueError):
    """A config field has a value cfjax cannot run with."""


class DataError(ValueError):
    """Input data cannot be used; the message names the file or folder and what is wrong."""


class ManualDirError(DataError):
    """The manual download folder is missing or lacks the expected files."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used with this run; the message says why and what to do."""


class CheckpointFault(CheckpointError):
    """A checkpoint could not be written, or no checkpoint reads back whole: the machine or the saved files
    are at fault, not the command (a fault's exit code, not a usage error's)."""


class StorageError(OSError):
    """A file or folder cfjax writes cannot be written (a full disk, a read-only or missing folder, a file
    in the way); the message names the path and the cause."""
