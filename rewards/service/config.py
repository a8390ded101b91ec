"""`ServiceConfig`: where the reward service listens and the limits it enforces."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewards.settings import RewardSettings, setting
from sandbox.config import SandboxConfig

MiB = 1 << 20


@dataclass(frozen=True)
class ServiceConfig:
    """Options of a :class:`rewards.service.RewardService`.

    Every field but ``reward`` and ``sandbox`` is a flag of ``effirl reward serve`` (and of
    ``python -m rewards.service``, the same command), and so is every field of ``reward`` but
    ``workers`` and ``service_url`` (see rewards/service/command.py).
    """

    host: str = setting(
        "127.0.0.1",
        "Address to listen on; bind elsewhere only with a token (anyone who reaches it runs code).",
    )
    port: int = setting(8080, "Port to listen on; 0 picks a free one (the `listening on` line says which).")
    token: str | None = setting(
        None,
        "Bearer token every route but /healthz requires (`Authorization: Bearer <token>`); none serves "
        "without authentication.",
    )
    workers: int | None = setting(
        None, "Sandbox worker processes; null uses reward.workers, else one per CPU core."
    )
    reward: RewardSettings = field(
        default_factory=RewardSettings,
        metadata={
            "help": "How results are scored when a request does not say (cost measure, penalties, ...); "
            "also sets the sandbox's limits."
        },
    )
    sandbox: SandboxConfig | None = field(
        default=None,
        metadata={"help": "The sandbox configuration; null derives it from `reward` and `workers`."},
    )
    max_body_bytes: int = setting(32 * MiB, "Largest request body accepted (413 beyond).")
    max_submissions: int = setting(
        4096, "Most submissions (or items) in one request (413 beyond); at most queue_capacity."
    )
    queue_capacity: int = setting(
        16384,
        "Most submissions accepted and not yet executed, over all requests; a request that does not "
        "fit is refused with 503 and a Retry-After header.",
    )
    request_timeout_s: float = setting(
        600.0,
        "How long one request may take; submissions not run by then are answered with a sandbox_error "
        "of kind deadline (their runs still finish and are cached).",
    )
    max_repeats: int = setting(20, "Largest `repeats` a request may ask for.")
    max_run_timeout_s: float = setting(
        60.0,
        "Largest time limit of one run a request may ask for: /run_code's run_timeout and the "
        "timeout_s of a request's settings.",
    )
    cache_size: int = setting(16384, "Distinct (task, code) results kept in memory; 0 runs every submission.")
    cache_max_bytes: int = setting(
        256 * MiB,
        "Most memory each result cache may hold (the runs, the reference runs, the references' outputs); "
        "least recently used results go first. Cached results keep only the first 512 characters of "
        "what a program printed.",
    )
    dataset_paths: bool = setting(
        False,
        "Let /v1/score load task files and folders named by path; off, it serves registered dataset "
        "names only, so a client cannot make the service read files or download.",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.token is not None and not self.token.strip():
            raise ValueError("token must not be empty; leave it unset to serve without authentication")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        for name in ("max_body_bytes", "max_submissions", "queue_capacity", "max_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"service {name} must be >= 1, got {getattr(self, name)}")
        if self.max_submissions > self.queue_capacity:
            raise ValueError(
                f"max_submissions ({self.max_submissions}) must not exceed queue_capacity "
                f"({self.queue_capacity}): a request that large could never be admitted"
            )
        for name in ("request_timeout_s", "max_run_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"service {name} must be > 0, got {getattr(self, name)}")
        if self.cache_max_bytes < 0:
            raise ValueError(f"cache_max_bytes must be >= 0, got {self.cache_max_bytes}")
        if self.cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (0 disables the cache), got {self.cache_size}")
        if self.reward.repeats > self.max_repeats:
            raise ValueError(
                f"reward.repeats ({self.reward.repeats}) must not exceed max_repeats ({self.max_repeats})"
            )
        if self.reward.timeout_s > self.max_run_timeout_s:
            raise ValueError(
                f"reward.timeout_s ({self.reward.timeout_s}) must not exceed max_run_timeout_s "
                f"({self.max_run_timeout_s})"
            )

    def sandbox_config(self) -> SandboxConfig:
        if self.sandbox is not None:
            return self.sandbox
        return self.reward.sandbox_config(**({} if self.workers is None else {"workers": self.workers}))
