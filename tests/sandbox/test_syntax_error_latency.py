"""Code that does not compile is answered at once, not after the time limit."""

from __future__ import annotations

import time

from sandbox import Sandbox, SandboxConfig, Status


def test_syntax_error_returns_without_waiting_for_the_timeout() -> None:
    # A limit far above any scheduling delay on a loaded machine: answering well before it shows the
    # syntax error did not wait for it.
    with Sandbox(SandboxConfig(workers=1, timeout_s=120.0)) as box:
        start = time.monotonic()
        result = box.call_function("def f(x)\n    return x\n", "f", [(1,)])
        elapsed = time.monotonic() - start
        assert result.status is Status.SYNTAX_ERROR and result.error_kind == "syntax"
        assert elapsed < 30.0
        assert box.run_function_tests("def f(x):\n    return x\n", "f", []).ok  # the worker is still fine
