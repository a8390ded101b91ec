"""effirl.sandbox: run untrusted Python safely and measure what it costs.

Knows nothing of models or rewards. The public surface (see docs/sandbox.md)::

    from sandbox import Sandbox, SandboxConfig, FunctionTest, ProgramTest, Status

    with Sandbox(SandboxConfig(workers=2, timeout_s=5)) as box:
        result = box.run_function_tests(code, "solve", [FunctionTest((3,), 6)])
        result.status, result.passed, result.cost.cpu_ns

Names are loaded lazily so that the fork server, which imports ``sandbox.zygote``, stays small.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Sandbox": "sandbox.pool",
    "SandboxConfig": "sandbox.config",
    "SandboxUnavailable": "sandbox.worker",
    "FunctionJob": "sandbox.jobs",
    "ProgramJob": "sandbox.jobs",
    "ScriptJob": "sandbox.jobs",
    "Job": "sandbox.jobs",
    "JobError": "sandbox.jobs",
    "Status": "sandbox.types",
    "FunctionTest": "sandbox.types",
    "ProgramTest": "sandbox.types",
    "TestOutcome": "sandbox.types",
    "Cost": "sandbox.types",
    "ExecutionResult": "sandbox.types",
    "outputs_match": "sandbox.compare",
    "probe_isolation": "sandbox.probe",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
