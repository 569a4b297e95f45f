"""The photos of a folder, recursively: which files count, and the ASCII-safe key each one's outputs go
under (names may hold any characters; outputs and the report's links stay plain)."""

import hashlib
import os
import re

from cfjax.data.builders import files
from cfjax.errors import DataError

# System and metadata files that are not photos, whatever their extension: macOS resource forks (._x.jpg)
# and folder metadata, Windows thumbnail caches, and every hidden file or folder.
SYSTEM_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", ".ds_store", "icon\r"})


def is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def list_photos(folder: str) -> tuple[list[str], list[str]]:
    """(paths relative to `folder` of every image file under it; those of the other files seen), each sorted.
    Hidden and system files and folders are ignored. DataError when the folder is missing or has no image."""
    if not os.path.isdir(folder):
        raise DataError(f"the folder to predict on, {folder!r}, does not exist" if not os.path.exists(folder) else
                        f"--folder={folder} is a file, not a folder of photos")
    found, others = [], []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_ignored(d))
        for name in names:
            if is_ignored(name):
                continue
            relative = os.path.relpath(os.path.join(root, name), folder)
            (found if name.lower().endswith(files.IMAGE_EXTENSIONS) else others).append(relative)
    if not found:
        raise DataError(f"no image files under {folder!r} (looked recursively for "
                        f"{', '.join(files.IMAGE_EXTENSIONS)}; {len(others)} other file(s) seen)")
    return sorted(found), sorted(others)


def shown(text: str) -> str:
    """`text` (a path, or a message naming one) as it can be printed and written as UTF-8: a file name that is not
    valid UTF-8 (Python keeps its bytes as surrogates) shows U+FFFD where the bad bytes were."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def key(relative_path: str) -> str:
    """A unique, ASCII-safe file stem for one photo's outputs: its path with other characters as '_',
    and a short hash of the exact path (two names that differ only in unusual characters stay apart)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", relative_path.replace(os.sep, "__")).strip("._")[:80]
    digest = hashlib.sha1(relative_path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{slug or 'photo'}-{digest}"
