"""Length-prefixed frames on pipes: how jobs and reports travel between the sandbox's processes.

Standard library only: this runs inside the fork server and its monitors.
"""

from __future__ import annotations

import os
import struct

HEADER = struct.Struct(">I")


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
