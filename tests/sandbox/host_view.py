"""The host's view of a sandbox's processes, read from /proc outside the box (candidates see none)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from sandbox import Sandbox


@dataclass(frozen=True)
class HostProcess:
    pid: int
    ppid: int
    state: str
    uid: int
    cap_eff: int
    name: str


def host_process(pid: int) -> HostProcess | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    end = stat.rfind(b")")
    fields = stat[end + 2 :].split()
    return HostProcess(
        pid=pid,
        ppid=int(fields[1]),
        state=fields[0].decode(),
        uid=int(status["Uid"].split()[0]),
        cap_eff=int(status["CapEff"].strip(), 16),
        name=status["Name"].strip(),
    )


def descendants(root: int) -> list[HostProcess]:
    """Every live (not zombie) process below ``root``."""
    processes = [p for p in (host_process(int(n)) for n in os.listdir("/proc") if n.isdigit()) if p]
    children: dict[int, list[HostProcess]] = {}
    for process in processes:
        children.setdefault(process.ppid, []).append(process)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return [p for p in found if p.state != "Z"]


def worker_trees(box: Sandbox) -> list[list[HostProcess]]:
    """For each worker of ``box``: the live processes below its fork server."""
    return [descendants(worker.process.pid) for worker in box._workers if worker.process is not None]


def settled_worker_trees(box: Sandbox, expected: int = 2, timeout_s: float = 30.0) -> list[list[HostProcess]]:
    """:func:`worker_trees` once every worker holds ``expected`` live processes that all sleep.

    After a run each fork server tears the run down and prepares the next one in the background, so
    the host looks until that is over (or the time is up, returning what it saw last).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        trees = worker_trees(box)
        settled = all(len(t) == expected and all(p.state == "S" for p in t) for t in trees)
        if settled or time.monotonic() > deadline:
            return trees
        time.sleep(0.05)
