"""Unprivileged uids for the sandbox's workers, unique to one sandbox on this host.

As root, each fork server drops to a uid that no account uses, one per worker, so that per-user
limits (RLIMIT_NPROC) count one worker's processes and no two workers share an identity. Two
sandboxes on one host (two reward services, or a service and a training run) must not share those
uids either: a candidate of one could then signal or read the other's processes. Each
:class:`~sandbox.Sandbox` therefore claims a block of uids of its own, held by an exclusive lock on
a file named after the block for as long as the sandbox lives; the kernel releases the lock when the
process ends, however it ends. Blocks are tried from a random starting point, so sandboxes that cannot
see each other's lock files (different lock folders) still collide only with a probability of about
one in a million.

Without root the question does not arise the same way: candidates run as the caller's own uid inside
user namespaces, and two sandboxes of one user share that uid by construction (see docs/sandbox.md).
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import tempfile
from dataclasses import dataclass

UID_BASE = 1_500_000_000  # above the ids of accounts and of systemd's dynamic users
BLOCK_SIZE = 256  # the most workers one sandbox may have
BLOCKS = (2**31 - 1 - UID_BASE) // BLOCK_SIZE  # uids stay below 2**31: some tools read them as signed
LOCK_FOLDERS = ("/run/lock", "/dev/shm")


@dataclass
class UidBlock:
    """Uids ``first .. first + BLOCK_SIZE - 1``, ours while ``lock_fd`` is open."""

    first: int
    lock_fd: int | None

    def uid(self, worker: int) -> int:
        if not 0 <= worker < BLOCK_SIZE:
            raise ValueError(f"a sandbox has at most {BLOCK_SIZE} workers, got worker index {worker}")
        return self.first + worker

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def claim_uid_block(rng: random.Random | None = None) -> UidBlock:
    """A block of uids no other live sandbox on this host holds (as far as lock files can tell)."""
    rng = rng or random.SystemRandom()
    folder = _lock_folder()
    start = rng.randrange(BLOCKS)
    for attempt in range(4096):
        block = (start + attempt) % BLOCKS
        first = UID_BASE + block * BLOCK_SIZE
        if folder is None:
            return UidBlock(first, None)
        fd = os.open(os.path.join(folder, f"{block}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                continue
            raise
        return UidBlock(first, fd)
    raise RuntimeError("no free block of sandbox uids: 4096 blocks in a row are held by live sandboxes")


def _lock_folder() -> str | None:
    for parent in (*LOCK_FOLDERS, tempfile.gettempdir()):
        folder = os.path.join(parent, "effirl-sandbox-uids")
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return None
