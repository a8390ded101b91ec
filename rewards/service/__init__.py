"""The HTTP reward service: ``effirl reward serve`` and the in-process :class:`RewardService`.

See docs/reward_service.md for the API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from typing import Any

from rewards.service.app import RewardService
from rewards.service.config import ServiceConfig
from rewards.settings import UNTRUSTED_COST_WARNING

__all__ = ["RewardService", "ServiceConfig", "serve"]


def serve(config: ServiceConfig | None = None, **options: Any) -> int:
    """Run the reward service until SIGINT or SIGTERM; returns the exit status (0).

    ``config`` (default: ``ServiceConfig(**options)``), with ``options`` as further
    :class:`ServiceConfig` fields (``port``, ``queue_capacity``, ``reward``, ...) replaced in it.
    Prints one line ``effirl reward service listening on http://HOST:PORT ...`` once it accepts
    connections (port 0 picks a free port, so that line is how a parent process learns it).
    """
    if config is None:
        config = ServiceConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.token is None:
        print(
            f"WARNING: serving on {config.host} without a token: anyone who can reach this port can run "
            "code in the sandbox; pass --token (or set EFFIRL_REWARD_TOKEN)",
            file=sys.stderr,
        )
    if not config.reward.cost_trusted:
        print(f"WARNING: {UNTRUSTED_COST_WARNING}", file=sys.stderr)
    if config.reward.isolation_warning is not None:
        print(f"WARNING: this reward service's {config.reward.isolation_warning}", file=sys.stderr)
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
        f"isolation {info['isolation']}, auth {'on' if service.config.token else 'off'}, "
        f"cost {service.config.reward.cost_measure})",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await service.stop()
