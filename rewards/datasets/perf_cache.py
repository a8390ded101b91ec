"""The on-disk cache of perf inputs, mirroring the expected-output cache.

    $EFFIRL_CACHE/perf_inputs/<key[:2]>/<key>.json        (EFFIRL_CACHE defaults to ~/.cache/effirl)

    line 1:  {"format": "effirl-perf-inputs/1", "key": "<sha256>", "count": <inputs>,
              "sha256": "<sha256 of line 2>"}
    line 2:  tagged JSON (sandbox.codec) of {"inputs", "outputs", "recipe", "costs_ns",
              "reference_cost_ns", "reached_floor", "note"}

The key hashes the cache format, the growth generator's version, the Python version, the entry
point, reference code, contract, the task's inputs and the plan (the recipe, or the search
settings), so a change to any of them, the generator included, misses the cache. Writes are atomic;
a file that fails any check is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rewards.datasets.expected_outputs import default_cache_dir
from rewards.datasets.input_growth import GENERATOR_VERSION
from rewards.datasets.perf_inputs import PerfInputs
from rewards.datasets.perf_search import PerfProblem, RecipeEntry
from sandbox import codec

log = logging.getLogger(__name__)
CACHE_FORMAT = "effirl-perf-inputs/1"


def default_perf_cache_dir() -> Path:
    """``$EFFIRL_CACHE/perf_inputs`` if the variable is set, else ``~/.cache/effirl/perf_inputs``."""
    return default_cache_dir().with_name("perf_inputs")


class PerfInputCache:
    """Perf inputs on disk, keyed by everything that decides them."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = (
            Path(directory) if directory is not None else default_cache_dir().with_name("perf_inputs")
        )

    @staticmethod
    def key(problem: PerfProblem, plan: str) -> str:
        digest = hashlib.sha256()
        python = f"python-{sys.version_info[0]}.{sys.version_info[1]}"
        parts = (
            CACHE_FORMAT,
            f"generator-{GENERATOR_VERSION}",
            python,
            problem.entry_point,
            problem.code,
            problem.contract,
            codec.dumps([list(a) for a in problem.inputs]),
            codec.dumps([list(a) for a in problem.seed_inputs]),
            plan,
        )
        for part in parts:
            data = part.encode()
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, problem: PerfProblem, plan: str) -> PerfInputs | None:
        """The cached perf inputs, or None when absent or not trustworthy."""
        key = self.key(problem, plan)
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("perf-input cache %s unreadable (%s); recomputing", path, exc)
            return None
        problem_text, result = _parse(raw, key, problem.name)
        if problem_text is not None:
            log.warning("perf-input cache %s is corrupt (%s); recomputing", path, problem_text)
        return result

    def put(self, problem: PerfProblem, plan: str, result: PerfInputs) -> Path:
        key = self.key(problem, plan)
        body = codec.dumps(
            {
                "inputs": [list(a) for a in result.inputs],
                "outputs": result.outputs,
                "recipe": [[e.seed, e.growth, e.factor, e.digest] for e in result.recipe],
                "costs_ns": result.costs_ns,
                "reference_cost_ns": result.reference_cost_ns,
                "reached_floor": result.reached_floor,
                "note": result.note,
            }
        ).encode()
        header = {
            "format": CACHE_FORMAT,
            "key": key,
            "count": len(result.inputs),
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


def _parse(raw: bytes, key: str, name: str) -> tuple[str | None, PerfInputs | None]:
    head, newline, body = raw.partition(b"\n")
    if not newline:
        return "no header line", None
    try:
        header = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"header is not JSON: {exc}", None
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT or header.get("key") != key:
        return "unknown format or key mismatch", None
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        return "checksum mismatch", None
    try:
        data: Any = codec.loads(body)
        count = header["count"]
        inputs = [tuple(a) for a in data["inputs"]]
        recipe = [RecipeEntry(int(s), str(g), int(f), str(d)) for s, g, f, d in data["recipe"]]
        outputs, costs = list(data["outputs"]), [int(c) for c in data["costs_ns"]]
        reference_cost = data["reference_cost_ns"]
        if not len(inputs) == len(outputs) == len(recipe) == len(costs) == count:
            return "wrong number of inputs", None
        result = PerfInputs(
            name,
            inputs,
            outputs,
            recipe,
            costs,
            None if reference_cost is None else int(reference_cost),
            bool(data["reached_floor"]),
            str(data["note"]),
            cached=True,
        )
    except (codec.DecodeError, KeyError, TypeError, ValueError) as exc:
        return f"undecodable entry: {exc}", None
    return None, result
