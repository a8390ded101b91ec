"""Fetch the EvalPlus release files into ``$EFFIRL_DATA_DIR``, checked against their SHA-256.

    effirl data download humanevalplus      # -> $EFFIRL_DATA_DIR/humanevalplus/HumanEvalPlus.jsonl.gz
    effirl data download mbppplus           # -> $EFFIRL_DATA_DIR/mbppplus/MbppPlus.jsonl.gz

The files are the versions EvalPlus's own package pins (HumanEval+ v0.1.10, MBPP+ v0.2.0). A file
is written into a temporary sibling and renamed into place only when its checksum matches, so a
broken download never leaves a file the loaders would read. Without internet the command says
where to put a copy fetched elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rewards.datasets.evalplus import DATA_DIR_ENV, ReleaseSource
from rewards.datasets.humanevalplus import HUMANEVALPLUS
from rewards.datasets.mbppplus import MBPPPLUS
from rewards.user_error import UserError

MAX_BYTES = 256 * 1024 * 1024
CHUNK = 1 << 16


@dataclass(frozen=True)
class ReleaseFile:
    """One pinned release file: where it comes from, its checksum, and where the loader looks."""

    source: ReleaseSource
    version: str
    url: str
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return self.source.name

    def path_in(self, data_dir: str | os.PathLike[str]) -> Path:
        return Path(data_dir).expanduser() / self.source.subdir / self.source.filename


RELEASE_FILES: dict[str, ReleaseFile] = {
    "humanevalplus": ReleaseFile(
        HUMANEVALPLUS,
        "v0.1.10",
        "https://github.com/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus.jsonl.gz",
        "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101",
        925_932,
    ),
    "mbppplus": ReleaseFile(
        MBPPPLUS,
        "v0.2.0",
        "https://github.com/evalplus/mbppplus_release/releases/download/v0.2.0/MbppPlus.jsonl.gz",
        "af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63",
        336_032,
    ),
}


class DownloadError(UserError):
    """A release file that could not be fetched or did not match its checksum."""


def release_file(name: str) -> ReleaseFile:
    if name not in RELEASE_FILES:
        raise DownloadError(f"no release file named {name!r}; choose one of {', '.join(RELEASE_FILES)}")
    return RELEASE_FILES[name]


def data_dir_of(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir``, else ``$EFFIRL_DATA_DIR``; a DownloadError naming both when neither is set."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise DownloadError(
            f"no data folder: set {DATA_DIR_ENV} (e.g. export {DATA_DIR_ENV}=~/effirl-data; the loaders "
            "read it too) or pass --data-dir"
        )
    return Path(chosen).expanduser()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_release(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    timeout_s: float = 60.0,
) -> tuple[Path, bool]:
    """Fetch release file ``name`` into ``data_dir`` (default ``$EFFIRL_DATA_DIR``).

    Returns (its path, whether it was downloaded now); a file already there with the right checksum
    is kept. ``url`` and ``sha256`` replace the pinned ones (a mirror, another version). Raises
    DownloadError when offline, on a checksum mismatch, or when a different file is in the way
    (``force`` replaces it).
    """
    release = release_file(name)
    target = release.path_in(data_dir_of(data_dir))
    url = url or release.url
    want = (sha256 or release.sha256).lower()
    if target.is_file():
        have = file_sha256(target)
        if have == want:
            return target, False
        if not force:
            raise DownloadError(
                f"{target} exists but its SHA-256 is {have}, not {want} (another version or a damaged "
                "file); remove it, or pass --force to replace it"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            got = _fetch(url, out, release, target, timeout_s)
        if got != want:
            raise DownloadError(
                f"the file from {url} has SHA-256 {got}, not {want}: it is damaged or another version; "
                "nothing was saved (pass --sha256 to accept another version on purpose)"
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target, True


def _fetch(url: str, out: object, release: ReleaseFile, target: Path, timeout_s: float) -> str:
    """Stream ``url`` into ``out``; returns the SHA-256 of what came."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            for block in iter(lambda: response.read(CHUNK), b""):
                received += len(block)
                if received > MAX_BYTES:
                    raise DownloadError(
                        f"{url} sent more than {MAX_BYTES >> 20} MiB; is it the release file?"
                    )
                digest.update(block)
                out.write(block)  # type: ignore[attr-defined]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(
            f"cannot download {release.name} from {url} ({reason}); without internet here, download "
            f"{release.source.filename} ({release.version}) elsewhere and put it at {target}"
        ) from exc
    return digest.hexdigest()
