"""Keep freed memory in the process, so that training does not pay the kernel for every large tensor.

glibc's malloc serves any block over 32 MB (its highest mmap threshold) with a fresh ``mmap`` and hands it back
with ``munmap`` when freed. A training step of RecBole's SASRec on ml-100k (batch 2048, 50 positions) makes and
frees several such blocks (the attention scores, the feed-forward activations), so every step faults in and zeroes
hundreds of MB of new pages: half of an epoch's time was spent in the kernel (docs/speed.md). ``keep_freed_memory``
turns ``mmap`` off for the main heap and lets the heap keep what is freed, so the next step reuses those pages.
A block that the heap cannot serve (a thread's arena, over 64 MB) still falls back to ``mmap``. The price: the
process keeps its peak memory until it ends, and the peak is higher (+11 to +13 % measured in docs/speed.md),
since a freed block is not always where the next one fits.

The CLI calls it where a run's process starts, not on import: a notebook that only imports the package keeps its
allocator as it was. Ray Tune trials train in a thread of a worker process, and a thread's arena cannot hold a
block over 64 MB: those processes get the same settings as environment variables at their start (``MALLOC_ENV``),
with one arena for all threads.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # free bytes at the heap's top before any go back to the kernel: in practice, never
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD), "MALLOC_ARENA_MAX": "1"}
_applied = False


def keep_freed_memory():
    """Tune glibc's malloc as described above; True where it was applied, False elsewhere (macOS, musl)."""
    global _applied
    if _applied:
        return True
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
