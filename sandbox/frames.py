"""Length-prefixed frames on pipes: how jobs and reports travel between the sandbox's processes.

Standard library only: this runs inside the fork server and its monitors.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

HEADER = struct.Struct(">I")
# Every report the fork server sends has one of these; anything else on its pipe is not a report.
REPORT_OUTCOMES = frozenset({"done", "exited", "timeout", "output_limit", "violation", "sandbox_error"})


def write_frame(fd: int, data: bytes) -> None:
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int) -> bytes | None:
    """The next frame, or None if the writer closed the pipe first."""
    header = read_exact(fd, HEADER.size)
    return None if header is None else read_exact(fd, HEADER.unpack(header)[0])


def read_exact(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def encode_report(report: dict[str, Any]) -> bytes:
    """A report as one frame's payload: its JSON, a newline, then its raw blobs back to back.

    ``report["blobs"]`` (a list of bytes: return values as the candidate wrote them) is replaced by
    their sizes, so large values are neither escaped into nor parsed out of the JSON.
    """
    blobs = report.pop("blobs", [])
    report["blob_sizes"] = [len(blob) for blob in blobs]
    return json.dumps(report, separators=(",", ":")).encode() + b"\n" + b"".join(blobs)


def decode_report(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_report`: ``report["blobs"]`` holds the raw values again."""
    header, _, rest = data.partition(b"\n")
    report = json.loads(header)
    if not isinstance(report, dict):
        raise ValueError(f"a report is a JSON object, not {type(report).__name__}")
    blobs, offset = [], 0
    for size in report.pop("blob_sizes", []):
        blobs.append(rest[offset : offset + size])
        offset += size
    report["blobs"] = blobs
    return report
