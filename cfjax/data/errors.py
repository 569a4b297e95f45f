"""Data errors, importable without TFDS: the CLI and training report them as one clear line."""


class DataError(ValueError):
    """Input data cannot be used; the message names the file or folder and what is wrong."""


class ManualDirError(DataError):
    """The manual download folder is missing or lacks the expected files."""
