"""SandboxFusion's ``/run_code``, answered by effirl's sandbox (Python only).

Clients written for SandboxFusion (verl's ``sandbox_fusion`` reward among them) can point at an effirl
reward service unchanged: the request fields they send are accepted and the response carries the
fields they read (``status``, ``message``, ``run_result.{status, execution_time, return_code, stdout,
stderr}``, ``compile_result``, ``files``).
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from typing import Any

from rewards.service.schema import RequestError, RunCodeRequest
from sandbox.jobs import ProgramJob
from sandbox.types import ExecutionResult, ProgramTest, Status


def program_job(request: RunCodeRequest, default_timeout_s: float) -> ProgramJob:
    """The sandbox job: the program (after writing any ``files``) run once on ``stdin``.

    The expected stdout is left empty: the verdict is read from the run itself, never compared.
    """
    code = _with_files(request.code, request.files) if request.files else request.code
    timeout = request.run_timeout if request.run_timeout is not None else default_timeout_s
    return ProgramJob(code, (ProgramTest(request.stdin, ""),), timeout, 1)


def _with_files(code: str, files: dict[str, str]) -> str:
    """Prefix ``code`` with statements that write ``files`` (base64 content) into the run's work dir."""
    lines = ["import base64 as _effirl_b64, os as _effirl_os"]
    for path, content in files.items():
        normal = posixpath.normpath(path)
        if not path or posixpath.isabs(path) or normal.startswith(".."):
            raise RequestError(
                f"`files` path {path!r} must be relative and stay inside the work directory "
                "(e.g. data/in.txt)"
            )
        try:
            base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"`files[{path!r}]` is not valid base64") from None
        folder = posixpath.dirname(normal)
        if folder:
            lines.append(f"_effirl_os.makedirs({folder!r}, exist_ok=True)")
        lines.append(
            f"with open({normal!r}, 'wb') as _effirl_f: _effirl_f.write(_effirl_b64.b64decode({content!r}))"
        )
    lines.append("del _effirl_b64, _effirl_os")
    return "\n".join(lines) + "\n" + code


def run_code_response(result: ExecutionResult, timeout_s: float) -> dict[str, Any]:
    """SandboxFusion's ``RunCodeResponse`` for one program run."""
    wall = None if result.cost is None else result.cost.wall_ns / 1e9
    if result.status is Status.SANDBOX_ERROR:
        return _response(
            "SandboxError",
            result.error or "sandbox error",
            _run("Error", wall, None, result.stdout, result.stderr),
        )
    if result.status is Status.TIMEOUT:
        return _response(
            "Failed", "", _run("TimeLimitExceeded", timeout_s, None, result.stdout, result.stderr)
        )
    code = return_code(result)
    stderr = result.stderr
    if code != 0 and result.error:
        stderr = stderr + ("" if not stderr or stderr.endswith("\n") else "\n") + result.error + "\n"
    if result.error == "output limit exceeded":
        stderr += "effirl: stdout exceeded the sandbox's max_stdout_bytes and was cut\n"
    return _response(
        "Success" if code == 0 else "Failed", "", _run("Finished", wall, code, result.stdout, stderr)
    )


def return_code(result: ExecutionResult) -> int:
    """The exit status a shell would have seen, as the kernel reported it (``waitpid``): 0, the
    ``sys.exit`` value, 1 for an uncaught error, minus the signal number for a program killed by a
    signal. Never read from anything the program printed. A run that never got to exit (it did not
    compile, or broke the sandbox's protocol) counts as 1."""
    if result.exit_code is not None:
        return result.exit_code
    return 1


def _run(status: str, seconds: float | None, code: int | None, stdout: str, stderr: str) -> dict[str, Any]:
    return {
        "status": status,
        "execution_time": seconds,
        "return_code": code,
        "stdout": stdout,
        "stderr": stderr,
    }


def _response(status: str, message: str, run: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": status,
        "message": message,
        "compile_result": None,
        "run_result": run,
        "executor_pod_name": None,
        "files": {},
    }
