"""``python -m rewards.service``: the reward service with every limit on the command line.

``effirl reward serve`` is the usual way to start it; this entry point also exposes the queue and
size limits (for benchmarks, tests and deployments that tune them).
"""

from __future__ import annotations

import argparse
import os
import sys

from rewards.service import serve
from rewards.service.config import ServiceConfig
from rewards.settings import RewardSettings


def main(argv: list[str] | None = None) -> int:
    defaults = ServiceConfig()
    parser = argparse.ArgumentParser(prog="python -m rewards.service", description=__doc__)
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="port; 0 picks a free one")
    parser.add_argument("--workers", type=int, default=None, help="sandbox workers (default: CPU count)")
    parser.add_argument(
        "--token",
        default=os.environ.get("EFFIRL_REWARD_TOKEN"),
        help="bearer token required on every request (default: $EFFIRL_REWARD_TOKEN, else none)",
    )
    parser.add_argument("--queue-capacity", type=int, default=defaults.queue_capacity)
    parser.add_argument("--max-submissions", type=int, default=defaults.max_submissions)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--request-timeout", type=float, default=defaults.request_timeout_s)
    parser.add_argument("--cache-size", type=int, default=defaults.cache_size)
    parser.add_argument("--timeout", type=float, default=RewardSettings().timeout_s, help="per-run limit (s)")
    parser.add_argument("--memory-mb", type=int, default=RewardSettings().memory_mb)
    parser.add_argument("--cost-measure", choices=("cpu", "instructions", "python_events"), default="cpu")
    parser.add_argument(
        "--dataset-paths",
        action="store_true",
        help="let /v1/score load task files by path (default: registered dataset names only)",
    )
    args = parser.parse_args(argv)
    reward = RewardSettings(timeout_s=args.timeout, memory_mb=args.memory_mb, cost_measure=args.cost_measure)
    return serve(
        host=args.host,
        port=args.port,
        workers=args.workers,
        token=args.token,
        queue_capacity=args.queue_capacity,
        max_submissions=min(args.max_submissions, args.queue_capacity),
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout,
        cache_size=args.cache_size,
        dataset_paths=args.dataset_paths,
        reward=reward,
    )


if __name__ == "__main__":
    sys.exit(main())
