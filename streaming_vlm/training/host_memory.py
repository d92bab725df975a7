"""Keep freed host memory in the process for reuse, for training on the CPU.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB, adjusted at run time) with a fresh
`mmap` and hands it back with `munmap` when freed. A CPU training step on a model with Qwen's 151,936-token
vocabulary allocates several such blocks per micro-batch (the output head's weight gradient, the tied embedding's
dense gradient and their sum: 78 MB each on the tiny default), so every one of them is page-faulted in afresh,
zero-filled by the kernel: on the demo's stage-1 step that was a third of the wall time, most of it system time
(BENCHMARKS.md, "Issue 26, sixth pass"). Raising the mmap threshold (and the trim threshold with it) makes such
blocks come from the heap, where a freed one is reused by the next allocation of its size.

The cost: memory freed during training stays with the process (up to `trim` bytes above what is in use) instead of
going back to the system. Only CPU training calls this; GPU runs keep the allocator's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
TRIM_THRESHOLD = 2 << 30  # free heap above 2 GiB is handed back


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds (process-wide, from now on). True when applied; False where the C
    library is not glibc (macOS, musl), which leaves the process as it was."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    clamp = (1 << 31) - 1  # mallopt takes an int
    # The trim threshold first: raising the mmap threshold alone would let free() trim the grown heap right back.
    ok = mallopt(M_TRIM_THRESHOLD, min(int(trim_threshold), clamp)) == 1
    return ok and mallopt(M_MMAP_THRESHOLD, min(int(mmap_threshold), clamp)) == 1
