"""`ServiceConfig`: where the reward service listens and the limits it enforces."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewards.settings import RewardSettings
from sandbox.config import SandboxConfig

MiB = 1 << 20


@dataclass(frozen=True)
class ServiceConfig:
    """Options of a :class:`rewards.service.RewardService`.

    host / port: where to listen; 127.0.0.1 by default (bind elsewhere only with a ``token``). Port 0
        picks a free port (see ``RewardService.url``).
    token: when set, every route but ``/healthz`` requires ``Authorization: Bearer <token>``.
    workers: sandbox worker processes (None: ``reward.workers``, else one per CPU core).
    reward: how results are scored (cost measure, penalties, ...); also sets the sandbox limits.
    sandbox: the sandbox configuration; None derives it from ``reward`` and ``workers``.
    max_body_bytes: largest request body accepted (413 beyond).
    max_submissions: most submissions (or items) in one request (413 beyond).
    queue_capacity: most submissions accepted and not yet executed, over all requests; a request
        that does not fit is refused with 503 and a Retry-After header.
    request_timeout_s: how long one request may take; submissions not run by then are answered
        with a ``sandbox_error`` of kind ``deadline`` (their runs still finish and are cached).
    max_repeats: largest ``repeats`` a request may ask for.
    max_run_timeout_s: largest ``run_timeout`` a ``/run_code`` request may ask for.
    cache_size: distinct (task, code) results kept in memory.
    dataset_paths: let ``/v1/score`` load task files and folders named by path; off, it serves
        registered dataset names only, so a client cannot make the service read files or download.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    workers: int | None = None
    reward: RewardSettings = field(default_factory=RewardSettings)
    sandbox: SandboxConfig | None = None
    max_body_bytes: int = 32 * MiB
    max_submissions: int = 4096
    queue_capacity: int = 16384
    request_timeout_s: float = 600.0
    max_repeats: int = 20
    max_run_timeout_s: float = 60.0
    cache_size: int = 16384
    dataset_paths: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.token is not None and not self.token.strip():
            raise ValueError("token must not be empty; leave it unset to serve without authentication")
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
        if self.cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (0 disables the cache), got {self.cache_size}")

    def sandbox_config(self) -> SandboxConfig:
        if self.sandbox is not None:
            return self.sandbox
        return self.reward.sandbox_config(**({} if self.workers is None else {"workers": self.workers}))
