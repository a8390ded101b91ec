"""Converted-checkpoint cache: a GGUF file becomes a transformers checkpoint once, then loads fast.

Layout: ``<root>/<name>/`` holds ``model.safetensors``, ``config.json``, the tokenizer files (chat
template included) and ``effirl_source.json``, which names the GGUF file it came from (path, size,
mtime). A cache whose source record no longer matches the file is rebuilt. ``<root>`` is
``$EFFIRL_CACHE/models`` when ``EFFIRL_CACHE`` is set, else ``~/.cache/effirl/models``.

Writes are atomic: a conversion fills a temporary directory beside the cache and renames it into
place, so an interrupted conversion leaves no half-written cache. A lock file serialises concurrent
conversions of the same file (e.g. several workers starting at once on one node).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SOURCE_RECORD = "effirl_source.json"


def cache_root() -> Path:
    """Where converted checkpoints live: ``$EFFIRL_CACHE/models``, else ``~/.cache/effirl/models``."""
    base = os.environ.get("EFFIRL_CACHE")
    if base:
        return Path(base).expanduser() / "models"
    return Path.home() / ".cache" / "effirl" / "models"


def file_identity(path: Path) -> dict[str, Any]:
    """What a cache records about its source file; a changed file (reinstall, edit) changes this."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_name_for(path: Path) -> str:
    """A readable, collision-free cache directory name for a GGUF file outside the built-ins."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return f"{path.stem}-{digest}"


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_record(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / SOURCE_RECORD).read_text())
    except (OSError, ValueError):
        return None


def cached_checkpoint(
    name: str,
    identity: dict[str, Any],
    build: Callable[[Path], None],
    *,
    root: Path | None = None,
) -> Path:
    """The cache directory ``<root>/<name>``, built by ``build(tmp_dir)`` unless a matching one exists.

    ``build`` writes the checkpoint files into the directory it is given; if it raises, the partial
    output is deleted and the error propagates, leaving any previous cache untouched.
    """
    root = cache_root() if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if _read_record(final) == identity:
        return final
    with _exclusive_lock(root / f".{name}.lock"):
        # Another process may have finished the same conversion while this one waited for the lock.
        if _read_record(final) == identity:
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        # mkdtemp makes the directory private (0700); a model cache is meant to be readable.
        staging.chmod(0o755)
        try:
            build(staging)
            # The record goes in last: a directory without it is never mistaken for a finished cache.
            (staging / SOURCE_RECORD).write_text(json.dumps(identity, indent=2))
            stale = None
            if final.exists():
                stale = Path(tempfile.mkdtemp(prefix=f".{name}.stale-", dir=root))
                os.rename(final, stale / name)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    return final
