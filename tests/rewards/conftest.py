from __future__ import annotations

import pytest

from sandbox import Sandbox, SandboxConfig


@pytest.fixture(scope="session")
def box() -> Sandbox:
    """One pool for the rewards tests that score in-process."""
    sandbox = Sandbox(SandboxConfig(workers=2, timeout_s=5.0, memory_mb=256))
    yield sandbox
    sandbox.close()
