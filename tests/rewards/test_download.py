"""`effirl data download`: the release files come over real HTTP (a server on loopback), are checked
against their SHA-256 before they are saved, and a machine without network gets one line saying
where to put the file."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewards.datasets import load_tasks
from rewards.datasets.download import RELEASE_FILES, DownloadError, download_release

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback, and its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [sys.executable, "-m", "rlhf.cli", *args],
        cwd=REPO,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_release_file_is_fetched_checked_and_found_by_the_loader(
    served: tuple[Path, str], tmp_path: Path, mbppplus_file: Path
) -> None:
    root, url = served
    shutil.copy(mbppplus_file, root / "MbppPlus.jsonl.gz")
    data = tmp_path / "data"
    path, fetched = download_release("mbppplus", data_dir=data, url=f"{url}/MbppPlus.jsonl.gz")
    assert fetched and path == data / "mbppplus" / "MbppPlus.jsonl.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == RELEASE_FILES["mbppplus"].sha256
    assert path.stat().st_size == RELEASE_FILES["mbppplus"].size
    assert download_release("mbppplus", data_dir=data, url=f"{url}/gone") == (
        path,
        False,
    )  # kept, not refetched
    assert [t.id for t in load_tasks(path, limit=0)] == []  # the loader recognises it as MBPP+
    assert list((data / "mbppplus").iterdir()) == [path]  # no temporary file left behind


def test_a_file_with_another_checksum_is_never_saved(served: tuple[Path, str], tmp_path: Path) -> None:
    root, url = served
    (root / "HumanEvalPlus.jsonl.gz").write_bytes(gzip.compress(b'{"task_id": "HumanEval/0"}\n'))
    data = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"SHA-256 .* not 2727.*nothing was saved"):
        download_release("humanevalplus", data_dir=data, url=f"{url}/HumanEvalPlus.jsonl.gz")
    assert not any((data / "humanevalplus").iterdir())
    # A checksum given on purpose (a mirror of another version) is accepted.
    digest = hashlib.sha256((root / "HumanEvalPlus.jsonl.gz").read_bytes()).hexdigest()
    path, _ = download_release(
        "humanevalplus", data_dir=data, url=f"{url}/HumanEvalPlus.jsonl.gz", sha256=digest
    )
    # ... and a different file in the way is replaced only with force.
    with pytest.raises(DownloadError, match=r"exists but its SHA-256.*--force"):
        download_release("humanevalplus", data_dir=data, url=f"{url}/x")
    with pytest.raises(DownloadError, match="cannot download humanevalplus"):
        download_release("humanevalplus", data_dir=data, url=f"{url}/missing", force=True)
    assert path.is_file()  # a failed replacement leaves the old file as it was


def test_offline_download_is_one_line_naming_where_to_put_the_file(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = served
    (root / "MbppPlus.jsonl.gz").write_bytes(b"not the release")
    data = tmp_path / "data"
    closed = f"http://127.0.0.1:{free_port()}/MbppPlus.jsonl.gz"  # nothing listens: as without network
    done = run_cli("data", "download", "mbppplus", "--url", closed, env={"EFFIRL_DATA_DIR": str(data)})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    target = data / "mbppplus" / "MbppPlus.jsonl.gz"
    assert done.stderr.startswith("effirl data: error: cannot download mbppplus from ")
    assert f"put it at {target}" in done.stderr and "Traceback" not in done.stderr
    mismatch = run_cli(
        "data",
        "download",
        "mbppplus",
        "--url",
        f"{url}/MbppPlus.jsonl.gz",
        env={"EFFIRL_DATA_DIR": str(data)},
    )
    assert mismatch.returncode == 2 and "nothing was saved" in mismatch.stderr and not target.exists()
    unset = run_cli("data", "download", "mbppplus", env={"EFFIRL_DATA_DIR": ""})
    assert unset.returncode == 2 and "set EFFIRL_DATA_DIR" in unset.stderr and "--data-dir" in unset.stderr
    debug = run_cli(
        "--debug", "data", "download", "mbppplus", "--url", closed, env={"EFFIRL_DATA_DIR": str(data)}
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "ConnectionRefusedError" in debug.stderr
