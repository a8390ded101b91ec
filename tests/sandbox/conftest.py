from __future__ import annotations

import pytest

from sandbox import Sandbox, SandboxConfig


@pytest.fixture(scope="session")
def box() -> Sandbox:
    """One shared pool for the whole session: the tests also prove it survives everything."""
    sandbox = Sandbox(SandboxConfig(workers=2, timeout_s=5.0, memory_mb=256))
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="session")
def run_scope_box() -> Sandbox:
    sandbox = Sandbox(SandboxConfig(workers=1, timeout_s=5.0, memory_mb=256, namespace_scope="run"))
    yield sandbox
    sandbox.close()
