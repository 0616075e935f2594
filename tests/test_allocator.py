"""allocator.keep_freed_memory: a large block freed and made again reuses its pages instead of faulting in new ones.

Each case runs in a fresh interpreter (malloc's settings are per process) and counts the minor page faults of
making and freeing a 64 MB tensor ten times after a first one: without the setting every round faults in the
whole block again (about 16,000 pages of 4 kB), with it the heap hands back the same pages.
"""
import os
import platform
import subprocess
import sys

import pytest

COUNT_FAULTS = """
import resource, sys, torch
from recbole_lumos.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.ones(16 * 2**20).sum()  # 64 MB: over glibc's highest mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 2**20).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run_script(script, *args, env=None):
    """What a script run in a fresh interpreter prints, split into words."""
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def faults(mode):
    applied, count = run_script(COUNT_FAULTS, mode)
    return applied, int(count)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's malloc; elsewhere a no-op")
def test_freed_large_blocks_are_reused_not_faulted_in_again():
    applied, kept = faults("keep")
    _, default = faults("default")
    assert applied == "True"
    assert default > 100_000  # ten 64 MB blocks of fresh pages
    assert kept < default / 4  # at most a block or two, where something small landed above a freed block


def test_without_glibc_it_reports_false_and_changes_nothing(monkeypatch):
    from recbole_lumos import allocator

    def no_libc(name):
        raise OSError(f"{name}: not found")

    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    assert allocator.keep_freed_memory() is False


FAULTS_IN_A_THREAD = """
import resource, threading, torch
def work():
    for _ in range(6):  # the heap settles over the first blocks
        torch.ones(27 * 2**20).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(6):
        torch.ones(27 * 2**20).sum()  # 108 MB: over what a thread's own arena can hold
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's malloc; elsewhere a no-op")
def test_ray_workers_environment_keeps_freed_memory_in_a_thread():
    """A Ray Tune trial trains in a thread of a worker started with MALLOC_ENV (tune.py)."""
    from recbole_lumos.allocator import MALLOC_ENV

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    default = int(run_script(FAULTS_IN_A_THREAD, env=base)[0])
    kept = int(run_script(FAULTS_IN_A_THREAD, env={**base, **MALLOC_ENV})[0])
    assert default > 6 * 27_000  # six 108 MB blocks of fresh 4 kB pages
    assert kept < default / 3  # at most a block or two where the heap had not settled yet (seen: 0 or 1 block)
