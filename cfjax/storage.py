"""Every file cfjax writes outside checkpoints goes through here, so that a storage fault (a full disk, a
read-only or missing folder, a file where a folder should be) ends in one `StorageError` line that names
the path and the cause, and a JSON result is never left half-written.

    check_writable(folder)           # before the work: refuses at once, not after minutes of compute
    write_json_atomic(path, obj)     # temp file in the same folder, fsync, os.replace
    with writing(path): ...          # any OSError inside becomes StorageError naming `path`
"""

import contextlib
import json
import os
import secrets
import stat
import tempfile

from cfjax.errors import StorageError


def describe(path: str, error: OSError, action: str = "writing") -> StorageError:
    """The one-line error for an OSError met while `action`-ing `path`."""
    cause = error.strerror or str(error) or type(error).__name__
    return StorageError(f"{action} {path} failed: {cause}")


@contextlib.contextmanager
def writing(path: str, action: str = "writing"):
    """Turn an OSError raised inside the block into a StorageError naming `path` and the cause."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        raise describe(path, error, action) from error


def make_dirs(folder: str) -> None:
    """os.makedirs(folder, exist_ok=True), with a file in the way or a read-only parent named."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise StorageError(f"creating folder {folder} failed: it exists and is a file, not a folder")
    with writing(folder, "creating folder"):
        os.makedirs(folder, exist_ok=True)


def check_writable(folder: str) -> None:
    """Refuse now, with a StorageError, a folder cfjax could not write into: a file in the way, a read-only
    or full file system. Writes and removes a probe file in `folder`, or where it does not exist yet, in
    its nearest existing parent (which the work would create it in); creates nothing."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "it" if existing == os.path.abspath(folder) else existing
        raise StorageError(f"writing into folder {folder} failed: {what} exists and is a file, not a folder")
    with writing(folder, "writing into folder"):
        descriptor, probe = tempfile.mkstemp(prefix=".cfjax_write_check_", dir=existing)
        try:
            os.write(descriptor, b"x")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
            os.unlink(probe)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then os.replace it over `path`: a reader sees the
    old file or the whole new one, never a truncated one. A failure leaves no temp file behind. The file gets
    the permissions a plain `open(path, "w")` gives it (an existing file's, else 0o666 less the umask), not
    the owner-only ones of a `tempfile.mkstemp` file, so outputs can be shared as any other file."""
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path):
        descriptor, temp = _create_temp_beside(path, folder)
        try:
            with os.fdopen(descriptor, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_folder(folder)


def _create_temp_beside(path: str, folder: str) -> tuple[int, str]:
    """A new temp file in `folder` (a random name, created exclusively), opened for writing: its mode is
    `path`'s where that exists, else what the kernel gives 0o666 under the process's umask."""
    temp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with contextlib.suppress(OSError):
        os.chmod(temp, stat.S_IMODE(os.stat(path).st_mode))
    return descriptor, temp


def write_text_atomic(path: str, text: str) -> None:
    """`text` (UTF-8) at `path`, atomically (see `write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode())


def append_line(path: str, line: str) -> None:
    """Append one line to a log file, an OSError named as a StorageError."""
    with writing(path), open(path, "a") as f:
        f.write(line + "\n")


def write_json_atomic(path: str, obj, **dump_options) -> None:
    """`obj` as indented JSON at `path`, atomically (see `write_bytes_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2, **dump_options))


def read_json(path: str):
    """The JSON at `path`, or None when it is missing, unreadable or not valid JSON (a truncated copy)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
