"""The C heap under a CPU learner (glibc's malloc), which decides most of a CPU run's peak RSS.

Every CPU tensor's memory comes from ``posix_memalign``. A learner step allocates and frees
thousands of tensors of a few sizes, and the activations its forward passes keep for the backward
passes are interleaved in the heap with the temporaries freed around them. glibc does not give
freed heap memory back to the kernel (only the top of the heap), and on the CPU quickstart the heap
grew to about twice what was in use at any moment (2.2 GiB for 1.1 GiB): the holes freed tensors
left were too small or too scattered for the next ones (glibc before 2.38 needs a free chunk 96
bytes larger than an aligned request, so a hole left by a freed tensor cannot take the next tensor of
the same size). Freed memory stays resident, so the peak RSS is that heap, not what the step needs.

:func:`HostHeap.mapped` serves the allocations of a stretch of code that are at least a threshold,
and that the heap's free memory cannot hold, from fresh pages mapped for each
(``mallopt(M_MMAP_THRESHOLD)``), which go back to the kernel when freed: the heap does not grow.
Around the learner's forward passes that takes the activations out of the heap (the backward passes'
temporaries, short-lived, stay in it): over three CPU quickstart steps the peak RSS fell from 2.79
to 2.29 GiB. Each page of a mapping is faulted in and zeroed by the kernel, which costs time: 1.14x
the learner's (docs/performance.md, "CPU memory"). :func:`HostHeap.trim` gives freed heap pages back
(``malloc_trim``): the rollout engine's buffers before the learner starts, and the learner's before
the next generation.

Elsewhere than Linux with glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Allocations mapped inside HostHeap.mapped: a token's 576 float32 hidden values (SmolLM2-135M) are
# 2.25 KiB, so 256 KiB is a tensor of about 110 tokens of hidden states, or more.
MAPPED_FROM_BYTES = 256 * 2**10
# What glibc's own adaptive settings end at on 64-bit Linux. Setting M_MMAP_THRESHOLD once turns the
# adaptation off for good, so both are set back to these: without them every free at the top of
# the heap over 128 KiB (the fixed default) would hand it back to the kernel and fault it in again.
HEAP_MMAP_THRESHOLD = 32 * 2**20
HEAP_TRIM_THRESHOLD = 2 * HEAP_MMAP_THRESHOLD


def uses_glibc(system: str, libc: str) -> bool:
    """Whether a process on ``system`` (``sys.platform``) with C library ``libc``
    (``platform.libc_ver()[0]``) allocates with glibc's malloc, whose settings this module uses."""
    return system.startswith("linux") and libc == "glibc"


@cache
def _glibc() -> ctypes.CDLL | None:
    if not uses_glibc(sys.platform, platform.libc_ver()[0]):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


class HostHeap:
    """This process's C heap: ``libc`` is glibc (ctypes) or None, where every method does nothing."""

    def __init__(self, libc: ctypes.CDLL | None) -> None:
        self.libc = libc
        self.settled = False

    @property
    def tunable(self) -> bool:
        return self.libc is not None

    def settle(self) -> bool:
        """Fix the heap's own thresholds at glibc's adaptive values (see HEAP_TRIM_THRESHOLD), once
        per process, before the first :meth:`mapped`; True when this call set them."""
        if self.libc is None or self.settled:
            return False
        self.libc.mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)
        self.libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
        self.settled = True
        return True

    @contextmanager
    def mapped(self, threshold: int = MAPPED_FROM_BYTES) -> Iterator[None]:
        """Inside, allocations of ``threshold`` bytes or more get pages of their own that go back to
        the kernel when freed (process-wide: other threads' allocations too)."""
        if self.libc is None:
            yield
            return
        self.settle()
        self.libc.mallopt(M_MMAP_THRESHOLD, threshold)
        try:
            yield
        finally:
            self.libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)

    def trim(self) -> bool:
        """Give the heap's free pages back to the kernel; True when there were some to give."""
        return bool(self.libc.malloc_trim(0)) if self.libc is not None else False


HEAP = HostHeap(_glibc())
