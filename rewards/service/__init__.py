"""The HTTP reward service: ``effirl reward serve`` and the in-process :class:`RewardService`.

See docs/reward_service.md for the API.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from rewards.service.app import RewardService
from rewards.service.config import ServiceConfig

__all__ = ["RewardService", "ServiceConfig", "serve"]


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int | None = None,
    token: str | None = None,
    **options: Any,
) -> int:
    """Run the reward service until SIGINT or SIGTERM; returns the exit status (0).

    ``options`` are further :class:`ServiceConfig` fields (``queue_capacity``, ``reward``, ...).
    Prints one line ``effirl reward service listening on http://HOST:PORT ...`` once it accepts
    connections (port 0 picks a free port, so that line is how a parent process learns it).
    """
    config = ServiceConfig(host=host, port=port, workers=workers, token=token, **options)
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(
            f"WARNING: serving on {host} without a token: anyone who can reach this port can run code "
            "in the sandbox; pass --token (or set EFFIRL_REWARD_TOKEN)",
            file=sys.stderr,
        )
    service = RewardService(config)
    try:
        asyncio.run(_run_until_signalled(service))
    finally:
        service.close()
    return 0


async def _run_until_signalled(service: RewardService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await service.start()
    info = service.sandbox.info
    print(
        f"effirl reward service listening on {service.url} ({info['workers']} sandbox workers, "
        f"isolation {info['isolation']}, auth {'on' if service.config.token else 'off'})",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await service.stop()
