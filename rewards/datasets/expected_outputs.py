"""Expected outputs for datasets that ship test inputs and a reference solution, but no outputs.

The reference runs once in the sandbox: that gives exactly the values a candidate's outputs will be
compared with (decoded by the same codec, under the same hash seed, within the same limits). The
outputs are cached on disk, one file per (Python version, entry point, reference code, inputs):

    $EFFIRL_CACHE/expected/<key[:2]>/<key>.json        (EFFIRL_CACHE defaults to ~/.cache/effirl)

    line 1:  {"format": "effirl-expected-outputs/1", "key": "<sha256>", "count": <n>,
              "failed": {"<index>": "<reason>", ...}, "sha256": "<sha256 of the rest of the file>"}
    line 2:  tagged JSON (sandbox.codec) of the list of outputs, null where the reference failed

Writes are atomic (temporary file, fsync, rename). A file that fails any check (unreadable header,
wrong format or key, checksum or count mismatch, undecodable values) is never trusted: it is
recomputed and overwritten. Inputs on which the reference itself fails (an exception, running out
of memory, a result too large to return) are deterministic for given sandbox limits and are cached
as failures; a run that times out or loses its worker is not cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox import codec
from sandbox.jobs import FunctionJob
from sandbox.types import ExecutionResult, FunctionTest, Status

if TYPE_CHECKING:
    from sandbox import Sandbox

log = logging.getLogger(__name__)
CACHE_FORMAT = "effirl-expected-outputs/1"
DEFAULT_TIMEOUT_S = 120.0
# Run-level outcomes that depend on load or luck rather than on the reference and its inputs.
_TRANSIENT = (Status.TIMEOUT, Status.SANDBOX_ERROR)


class ReferenceFailed(RuntimeError):
    """A reference solution could not produce the outputs asked of it."""


@dataclass(frozen=True)
class ReferenceCall:
    """Run ``code``'s ``entry_point`` on every argument tuple in ``inputs``; ``name`` labels errors."""

    name: str
    code: str
    entry_point: str
    inputs: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class ReferenceOutputs:
    """The reference's return value per input (None where it failed) and why each failure happened."""

    values: list[Any]
    failed: dict[int, str] = field(default_factory=dict)


def default_cache_dir() -> Path:
    """``$EFFIRL_CACHE/expected`` if the variable is set, else ``~/.cache/effirl/expected``."""
    root = os.environ.get("EFFIRL_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "effirl"
    return base / "expected"


class ExpectedOutputCache:
    """Reference outputs on disk, keyed by a hash of the entry point, reference code and inputs."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    @staticmethod
    def key(call: ReferenceCall) -> str:
        """sha256 over the cache format, Python version, entry point, reference code and inputs."""
        digest = hashlib.sha256()
        # The sandbox runs the host's interpreter, whose version can change what a reference returns.
        python = f"python-{sys.version_info[0]}.{sys.version_info[1]}"
        inputs = codec.dumps([list(a) for a in call.inputs])
        for part in (CACHE_FORMAT, python, call.entry_point, call.code, inputs):
            data = part.encode()
            digest.update(len(data).to_bytes(8, "little"))  # length-prefixed: no ambiguous concatenation
            digest.update(data)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, call: ReferenceCall) -> ReferenceOutputs | None:
        """The cached outputs of ``call``, or None when absent or not trustworthy."""
        key = self.key(call)
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("expected-output cache %s unreadable (%s); recomputing", path, exc)
            return None
        problem, outputs = _parse_entry(raw, key, len(call.inputs))
        if problem is not None:
            log.warning("expected-output cache %s is corrupt (%s); recomputing", path, problem)
            return None
        return outputs

    def put(self, call: ReferenceCall, outputs: ReferenceOutputs) -> Path:
        """Store ``outputs`` atomically; returns the file written."""
        if len(outputs.values) != len(call.inputs):
            raise ValueError(f"{call.name}: {len(outputs.values)} outputs for {len(call.inputs)} inputs")
        key = self.key(call)
        body = codec.dumps(outputs.values).encode()
        header = {
            "format": CACHE_FORMAT,
            "key": key,
            "count": len(outputs.values),
            "failed": {str(i): reason for i, reason in sorted(outputs.failed.items())},
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(json.dumps(header).encode() + b"\n")
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


def _parse_entry(raw: bytes, key: str, count: int) -> tuple[str | None, ReferenceOutputs | None]:
    head, newline, body = raw.partition(b"\n")
    if not newline:
        return "no header line", None
    try:
        header = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"header is not JSON: {exc}", None
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
        return "unknown format", None
    if header.get("key") != key:
        return "key mismatch", None
    if header.get("count") != count:
        return "wrong number of outputs", None
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        return "checksum mismatch", None
    try:
        values = codec.loads(body)
        failed = {int(i): str(reason) for i, reason in header.get("failed", {}).items()}
    except (codec.DecodeError, ValueError, TypeError, AttributeError) as exc:
        return f"undecodable outputs: {exc}", None
    if not isinstance(values, list) or len(values) != count or any(not 0 <= i < count for i in failed):
        return "wrong number of outputs", None
    return None, ReferenceOutputs(values, failed)


def compute_expected_outputs(
    sandbox: Sandbox | None,
    calls: Sequence[ReferenceCall],
    *,
    cache: ExpectedOutputCache | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    allow_failed_inputs: bool = False,
) -> list[ReferenceOutputs]:
    """The outputs of each reference call, from the cache or by running it in ``sandbox``.

    Calls that miss the cache run in parallel on the sandbox's workers; with ``sandbox=None`` a
    default sandbox is started for them (and closed after), and none at all when every call is
    cached. Raises :class:`ReferenceFailed` naming the call, the input and the error when a reference
    does not run to the end (syntax error, missing function, timeout, sandbox failure) and, unless
    ``allow_failed_inputs``, when it fails on any single input.
    """
    results: list[ReferenceOutputs | None] = [cache.get(c) if cache is not None else None for c in calls]
    missing = [i for i, r in enumerate(results) if r is None]
    if missing and sandbox is None:
        from sandbox import Sandbox, SandboxConfig

        with Sandbox(SandboxConfig(timeout_s=timeout_s)) as box:
            _run_references(box, calls, missing, results, cache, timeout_s)
    elif missing:
        assert sandbox is not None
        _run_references(sandbox, calls, missing, results, cache, timeout_s)
    done = [r for r in results if r is not None]
    if not allow_failed_inputs:
        failures = [
            f"{call.name}: reference failed on input {i} {_preview(call.inputs[i])}: {reason}"
            for call, outputs in zip(calls, done)
            for i, reason in sorted(outputs.failed.items())
        ]
        _raise_if_any(failures)
    return done


def _run_references(
    sandbox: Sandbox,
    calls: Sequence[ReferenceCall],
    missing: Sequence[int],
    results: list[ReferenceOutputs | None],
    cache: ExpectedOutputCache | None,
    timeout_s: float,
) -> None:
    jobs = [
        FunctionJob(
            calls[i].code,
            calls[i].entry_point,
            tuple(FunctionTest(tuple(args)) for args in calls[i].inputs),
            timeout_s=timeout_s,
            repeats=1,
            want_outputs=True,
        )
        for i in missing
    ]
    failures = []
    # The first load of a dataset runs every reference (minutes for thousands of tasks); later loads
    # read the cache. A bar says how far the first one is.
    progress = "expected outputs (first load; cached after)" if len(jobs) > 1 else False
    for index, result in zip(missing, sandbox.run_many(jobs, progress=progress)):
        call = calls[index]
        problem = _run_problem(result, len(call.inputs))
        if problem is not None:
            failures.append(f"{call.name}: reference did not complete: {problem}")
            continue
        assert result.outputs is not None
        failed = {i: test.error or "failed" for i, test in enumerate(result.tests) if not test.passed}
        outputs = ReferenceOutputs([None if i in failed else v for i, v in enumerate(result.outputs)], failed)
        results[index] = outputs
        if cache is not None:
            cache.put(call, outputs)
    _raise_if_any(failures)


def _run_problem(result: ExecutionResult, count: int) -> str | None:
    """Why a run as a whole cannot be trusted, or None if each input got its own verdict."""
    if result.status in _TRANSIENT:
        return f"{result.status.value}: {result.error}"
    if result.outputs is None or len(result.outputs) != count or len(result.tests) != count:
        return f"{result.status.value} ({result.error_kind}): {result.error}"
    if any(not t.passed and t.error == "no result" for t in result.tests):
        return f"{result.status.value}: some inputs got no result ({result.error})"
    return None


def _raise_if_any(failures: Sequence[str]) -> None:
    if failures:
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        raise ReferenceFailed("; ".join(failures[:3]) + more)


def _preview(args: tuple[Any, ...], limit: int = 120) -> str:
    text = repr(args)
    return text if len(text) <= limit else text[: limit - 3] + "..."
