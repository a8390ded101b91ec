"""Reward services on real loopback sockets for the service tests: in-process and as a subprocess."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def post(url: str, body: Any, *, raw: bytes | None = None, headers: dict[str, str] | None = None):
    """POST and return (status, headers, decoded JSON body) without raising on 4xx/5xx."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    return _open(request)


def get(url: str, headers: dict[str, str] | None = None):
    return _open(urllib.request.Request(url, headers=headers or {}))


def _open(request: urllib.request.Request):
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), _body(response.read(), response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), _body(error.read(), error.headers)


def _body(data: bytes, headers: Any) -> Any:
    if "json" in headers.get("Content-Type", ""):
        return json.loads(data)
    return data.decode()


class ServiceProcess:
    """``effirl reward serve`` in a child process, stopped with SIGTERM."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        command = [sys.executable, "-m", "rlhf.cli", "reward", "serve", "--port", "0", *args]
        self.process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 1.0)
            if ready:
                line = self.process.stdout.readline()
                if "listening on" in line:
                    return line.split("listening on ", 1)[1].split()[0]
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
        raise RuntimeError("the service did not report its address within 60 s")

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def fork_servers(self) -> list[int]:
        """Pids of the sandbox's fork servers (direct children of the service process)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"sandbox.zygote" in cmdline:
                pids.append(int(entry.name))
        return pids
