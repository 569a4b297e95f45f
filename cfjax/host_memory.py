"""Keep host memory that XLA:CPU frees inside the process, so the next step does not fault it back in.

XLA:CPU allocates a step's temporary buffers with malloc and frees them when the step ends. glibc hands
freed memory back to the kernel soon after, so every step maps it again and touches it page by page: the
default CPU run took 97 million page faults and spent 15 % of its time in the kernel. Freezing glibc's
thresholds (large blocks from the heap up to 32 MiB, 64 MiB kept at the top of each heap, no trimming
below 1 GiB) removed 45-90 % of them over whole runs, not equally in every process (docs/performance.md,
"Host memory").
"""

import ctypes
import os
import sys

# glibc's <malloc.h> parameter numbers, and the values chosen
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {_M_MMAP_THRESHOLD: 32 << 20, _M_TOP_PAD: 64 << 20, _M_TRIM_THRESHOLD: 1 << 30}
_USER_VARIABLES = ("MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds (`SETTINGS`) for this process; True if they took effect.

    Nothing happens (False) off Linux, with a C library without `mallopt` (musl), or when the user set
    malloc's thresholds already (glibc's `MALLOC_*_` variables or `GLIBC_TUNABLES`)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_VARIABLES):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(parameter, value) == 1 for parameter, value in SETTINGS.items()])
