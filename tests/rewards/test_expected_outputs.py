"""Expected outputs from reference runs in the sandbox, and their on-disk cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rewards.datasets.expected_outputs import (
    ExpectedOutputCache,
    ReferenceCall,
    ReferenceFailed,
    ReferenceOutputs,
    compute_expected_outputs,
    default_cache_dir,
)
from sandbox import Sandbox, SandboxConfig

SQUARE = ReferenceCall("sq", "def sq(x):\n    return x * x\n", "sq", ((2,), (-3,), (10**30,)))
SHAPES = ReferenceCall(
    "shapes",
    "def shapes(x):\n    return (x, {x}, float('nan'), b'\\x00', {1: x})\n",
    "shapes",
    ((1,), ("a",)),
)


@pytest.fixture
def closed_box() -> Sandbox:
    """A real sandbox that refuses work: proves a code path never runs anything."""
    sandbox = Sandbox(SandboxConfig(workers=1))
    sandbox.close()
    return sandbox


def test_outputs_come_from_the_sandbox_and_keep_python_types(box: Sandbox, tmp_path: Path) -> None:
    square, shapes = compute_expected_outputs(box, [SQUARE, SHAPES], cache=ExpectedOutputCache(tmp_path))
    assert square.values == [4, 9, 10**60] and square.failed == {}
    first = shapes.values[0]
    assert (
        first[0] == 1
        and first[1] == {1}
        and math.isnan(first[2])
        and first[3] == b"\x00"
        and first[4] == {1: 1}
    )
    assert isinstance(first, tuple)


def test_cache_hit_needs_no_sandbox(box: Sandbox, closed_box: Sandbox, tmp_path: Path) -> None:
    cache = ExpectedOutputCache(tmp_path)
    first = compute_expected_outputs(box, [SQUARE], cache=cache)
    assert compute_expected_outputs(closed_box, [SQUARE], cache=cache) == first
    assert compute_expected_outputs(None, [SQUARE], cache=cache) == first
    with pytest.raises(RuntimeError, match="closed"):
        compute_expected_outputs(closed_box, [SQUARE], cache=ExpectedOutputCache(tmp_path / "other"))


def test_key_depends_on_code_entry_point_and_inputs() -> None:
    key = ExpectedOutputCache.key
    base = key(SQUARE)
    assert base == key(ReferenceCall("renamed", SQUARE.code, "sq", SQUARE.inputs))
    assert base != key(ReferenceCall("sq", SQUARE.code + "\n", "sq", SQUARE.inputs))
    assert base != key(ReferenceCall("sq", SQUARE.code, "sq", ((2,), (-3,))))
    assert base != key(ReferenceCall("sq", SQUARE.code, "sq", (([2],), (-3,), (10**30,))))
    assert key(ReferenceCall("t", "c", "f", (((1, 2),),))) != key(ReferenceCall("t", "c", "f", (([1, 2],),)))


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EFFIRL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "expected"
    monkeypatch.delenv("EFFIRL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "effirl" / "expected"


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    cache = ExpectedOutputCache(tmp_path)
    outputs = ReferenceOutputs([4, 9, 10**60])
    path = cache.put(SQUARE, outputs)
    cache.put(SQUARE, outputs)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert cache.get(SQUARE) == outputs
    with pytest.raises(ValueError, match="2 outputs for 3 inputs"):
        cache.put(SQUARE, ReferenceOutputs([1, 2]))


def _corruptions(path: Path) -> dict[str, bytes]:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n")
    header = json.loads(head)
    return {
        "flipped byte in body": head + b"\n" + body.replace(b"4", b"5", 1),
        "truncated": raw[: len(raw) // 2],
        "no newline": head,
        "garbage": b"\x00\xff not json",
        "empty": b"",
        "wrong key": json.dumps({**header, "key": "0" * 64}).encode() + b"\n" + body,
        "wrong count": json.dumps({**header, "count": 2}).encode() + b"\n" + body,
        "wrong format": json.dumps({**header, "format": "other"}).encode() + b"\n" + body,
        "bad failure index": json.dumps({**header, "failed": {"7": "x"}}).encode() + b"\n" + body,
    }


@pytest.mark.parametrize(
    "kind",
    [
        "flipped byte in body",
        "truncated",
        "no newline",
        "garbage",
        "empty",
        "wrong key",
        "wrong count",
        "wrong format",
        "bad failure index",
    ],
)
def test_corrupted_cache_file_is_never_trusted_and_gets_recomputed(
    box: Sandbox, tmp_path: Path, kind: str
) -> None:
    cache = ExpectedOutputCache(tmp_path)
    path = cache.put(SQUARE, ReferenceOutputs([4, 9, 10**60]))
    path.write_bytes(_corruptions(path)[kind])
    assert cache.get(SQUARE) is None
    (outputs,) = compute_expected_outputs(box, [SQUARE], cache=cache)
    assert outputs.values == [4, 9, 10**60]
    assert cache.get(SQUARE) == outputs  # the file was rewritten


def test_poisoned_but_well_formed_cache_for_another_call_is_not_used(tmp_path: Path) -> None:
    cache = ExpectedOutputCache(tmp_path)
    other = ReferenceCall("sq", SQUARE.code, "sq", ((3,), (-3,), (10**30,)))
    path = cache.put(other, ReferenceOutputs([0, 0, 0]))
    target = cache.path(cache.key(SQUARE))
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)  # the right place, content keyed for another call
    assert cache.get(SQUARE) is None


def test_failing_input_raises_naming_the_call_and_input(box: Sandbox, tmp_path: Path) -> None:
    call = ReferenceCall("Task/7", "def inv(x):\n    return 1 / x\n", "inv", ((2,), (0,), (4,)))
    with pytest.raises(
        ReferenceFailed, match=r"Task/7: reference failed on input 1 \(0,\).*ZeroDivisionError"
    ):
        compute_expected_outputs(box, [call], cache=ExpectedOutputCache(tmp_path))


def test_failed_inputs_are_reported_and_cached_when_allowed(
    box: Sandbox, closed_box: Sandbox, tmp_path: Path
) -> None:
    call = ReferenceCall("Task/7", "def inv(x):\n    return 1 / x\n", "inv", ((2,), (0,), (4,)))
    cache = ExpectedOutputCache(tmp_path)
    (outputs,) = compute_expected_outputs(box, [call], cache=cache, allow_failed_inputs=True)
    assert outputs.values == [0.5, None, 0.25]
    assert list(outputs.failed) == [1] and "ZeroDivisionError" in outputs.failed[1]
    assert compute_expected_outputs(closed_box, [call], cache=cache, allow_failed_inputs=True) == [outputs]
    with pytest.raises(ReferenceFailed, match="input 1"):
        compute_expected_outputs(closed_box, [call], cache=cache)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("def f(x)\n    return x\n", "syntax"),
        ("def g(x):\n    return x\n", "not defined"),
        ("def f(x):\n    while True:\n        pass\n", "timeout"),
    ],
)
def test_reference_that_cannot_run_raises_and_is_not_cached(
    box: Sandbox, tmp_path: Path, code: str, message: str
) -> None:
    call = ReferenceCall("broken", code, "f", ((1,),))
    cache = ExpectedOutputCache(tmp_path)
    with pytest.raises(ReferenceFailed, match=message):
        compute_expected_outputs(box, [call], cache=cache, timeout_s=1.0, allow_failed_inputs=True)
    assert cache.get(call) is None and not any(tmp_path.rglob("*.json"))


def test_the_first_computation_shows_progress(
    box: Sandbox, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cache = ExpectedOutputCache(tmp_path)
    compute_expected_outputs(box, [SQUARE, SHAPES], cache=cache)
    assert "expected outputs (first load; cached after): 100%" in capfd.readouterr().err
    compute_expected_outputs(box, [SQUARE, SHAPES], cache=cache)  # cached: nothing runs, no bar
    assert "expected outputs" not in capfd.readouterr().err
