"""The C heap under a CPU learner: tuned with glibc only, settled once, and large allocations inside
the forward window get pages of their own that go back to the kernel when freed."""

from __future__ import annotations

import ctypes
import platform
import sys

import pytest
import torch

from rlhf.algorithms import resolve_algorithm
from rlhf.config import AlgorithmConfig, TrainConfig
from rlhf.learner.host_heap import HEAP, MAPPED_FROM_BYTES, HostHeap, _glibc, uses_glibc
from rlhf.learner.updates import Learner, LearnerOptions
from rlhf.models.loading import adapter_parameters, apply_lora, tiny_model_and_tokenizer

GLIBC = uses_glibc(sys.platform, platform.libc_ver()[0])
needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")


def test_only_linux_with_glibc_is_tuned() -> None:
    assert uses_glibc("linux", "glibc")
    assert not uses_glibc("linux", "")  # musl (Alpine): platform.libc_ver() names no C library
    assert not uses_glibc("darwin", "")
    assert not uses_glibc("win32", "")
    assert HEAP.tunable == GLIBC


def test_without_glibc_every_method_does_nothing() -> None:
    heap = HostHeap(None)
    assert not heap.tunable and not heap.settle() and not heap.trim()
    with heap.mapped():
        tensor = torch.ones(2**20)
    assert float(tensor.sum()) == 2**20


MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS.split()]


def _mallinfo() -> _MallInfo2:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


def _mapped_bytes() -> int:
    """Bytes of the allocations glibc serves with a mapping of their own (mallinfo2's hblkhd)."""
    return int(_mallinfo().hblkhd)


@needs_glibc
def test_the_heap_is_settled_once_per_heap() -> None:
    heap = HostHeap(_glibc())
    assert heap.settle()
    assert not heap.settle()


@needs_glibc
def test_inside_the_window_large_allocations_are_mapped_and_given_back() -> None:
    heap = HostHeap(_glibc())
    heap.settle()
    # glibc serves a request from free heap memory first and maps only what the heap cannot hold
    # (so the heap does not grow): in a process that has freed memory before (the whole test
    # suite), only a request larger than all the heap's free bytes is sure to be mapped.
    elements = max(MAPPED_FROM_BYTES, int(_mallinfo().fordblks) // 4 + 2**20)  # float32: 4x or more
    before = _mapped_bytes()
    with heap.mapped():
        large = torch.empty(elements)
        with_large = _mapped_bytes()
        small = torch.empty(MAPPED_FROM_BYTES // 16)  # a quarter of it: from the heap
        with_small = _mapped_bytes()
    assert with_large - before >= large.nbytes
    assert with_small == with_large
    del large
    assert _mapped_bytes() == before  # unmapped as soon as it was freed
    outside = torch.empty(MAPPED_FROM_BYTES)  # after the window: from the heap again
    assert _mapped_bytes() == before
    assert outside.nbytes > small.nbytes
    assert isinstance(heap.trim(), bool)


def test_the_learner_maps_its_forward_allocations_on_a_cpu_unless_told_not_to() -> None:
    model, _ = tiny_model_and_tokenizer()
    model = apply_lora(model, rank=2, alpha=4)
    parameters = list(adapter_parameters(model).values())
    for setting, mapped in ((None, True), (True, True), (False, False)):
        options = LearnerOptions(
            train=TrainConfig(map_activations=setting),
            algorithm=AlgorithmConfig(),
            spec=resolve_algorithm("grpo"),
            temperature=1.0,
            max_new_tokens=4,
        )
        learner = Learner(model, parameters, options)
        assert (learner.forward_heap == HEAP.mapped) is mapped, setting
