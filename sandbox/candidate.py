"""What runs in a candidate process before the harness: making its box, sealing it, taking its job.

A candidate is cloned by the fork server's *template* (:mod:`sandbox.zygote`), a process that has never
held a job's data, straight into new namespaces and with the fork server as its parent (so the server
can watch it, wait for it and read its exit status). Under bubblewrap it is instead a fresh
interpreter (:func:`boxed_main`). Either way it ends by waiting for its job on fd 4 and handing over
to :mod:`sandbox.harness`. Standard library only.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass

from sandbox import harness, namespaces, seccomp
from sandbox.frames import read_frame

# The candidate's descriptors: 0 stdin, 1 stdout, 2 stderr, 3 results, 4 job and acknowledgements.
FD_COUNT = 5


@dataclass(frozen=True)
class Settings:
    """How a fork server's candidates are boxed (fixed when the server starts)."""

    level: str
    scope: str  # "worker": namespaces made once per fork server; "run": fresh ones per execution
    seccomp_filter: seccomp.SeccompFilter | None
    baseline_vm_bytes: int
    work_dir_bytes: int
    uid: int | None  # the unprivileged uid candidates run as when the server was started as root
    bwrap_command: tuple[str, ...] = ()  # isolation 'bwrap': the command that starts a boxed candidate

    @property
    def clone_flags(self) -> int:
        """The namespaces each candidate is cloned into: its own pid and mount namespaces (so it is pid
        1 of the first, and its /tmp and /proc are its own), and in the run scope all six."""
        if self.level != "namespaces":
            return 0
        if self.scope == "run":
            return namespaces.RUN_NAMESPACES
        return namespaces.CLONE_NEWPID | namespaces.CLONE_NEWNS


def seal_and_run(
    settings: Settings, fds: tuple[int, ...], work_dir: str, outside_ids: tuple[int, int]
) -> None:
    """Body of a cloned candidate: finish its box, seal it, wait for the job, run it. Never returns.

    ``outside_ids`` are the template's uid and gid, which a fresh user namespace (run scope) maps its
    inside uid to.
    """
    notes: list[str] = []
    result_fd = fds[3]
    try:
        namespaces.die_with_parent()
        if settings.level == "namespaces":
            if settings.scope == "run":
                namespaces.set_dumpable()  # the template is not dumpable; writing our id maps needs it
                namespaces.write_id_maps(namespaces.SANDBOX_INSIDE_ID, *outside_ids)
            namespaces.mount_run_tmp(settings.work_dir_bytes)
            if not namespaces.mount_run_proc():
                notes.append("fresh /proc refused by the kernel; /proc hidden instead")
        os.setsid()  # its own session and process group: kill(0, ...) reaches only its own run
        if settings.level == "process" and settings.uid is not None:
            namespaces.become_unprivileged(settings.uid)
        copies = [os.dup(fd) for fd in fds]
        for target, fd in enumerate(copies):
            os.dup2(fd, target)
        result_fd = 3
        os.closerange(FD_COUNT, 1 << 16)
        os.chdir(work_dir)
        if work_dir != "/tmp":
            os.environ.update({"HOME": work_dir, "TMPDIR": work_dir})
        if settings.level == "namespaces":
            # In the worker scope the template emptied the bounding set; a fresh user namespace
            # (run scope) gives a full one back.
            namespaces.drop_capabilities(bounding_set=settings.scope == "run")
        # Dumpable again (the template is not): its monitor may attach a hardware counter to it, and
        # nothing else can see it.
        namespaces.set_dumpable()
        if settings.seccomp_filter is not None:
            settings.seccomp_filter.install()
    except BaseException as exc:
        _setup_failed(result_fd, exc)
    receive_and_run(settings.baseline_vm_bytes, notes)


def boxed_main() -> None:
    """Entry point of a candidate interpreter started fresh inside bubblewrap (isolation 'bwrap').

    bubblewrap already made the namespaces and the read-only root; fds 0-4 are set up as for a cloned
    candidate. What is left: seccomp, then the job.
    """
    try:
        harness.preload()
        allow = json.loads(os.environ.pop("EFFIRL_ALLOW_SUBPROCESSES", "false"))
        seccomp.build_filter(allow_subprocesses=allow).install()
        baseline = vm_size_bytes()
    except BaseException as exc:
        _setup_failed(3, exc)
    receive_and_run(baseline, [])


def receive_and_run(baseline_vm_bytes: int, notes: list[str]) -> None:
    """Wait for the job on fd 4, apply its limits, run it; never returns."""
    try:
        job_bytes = read_frame(4)
        if job_bytes is None:
            os._exit(0)
        job = json.loads(job_bytes)
        limits = job["limits"]
        namespaces.apply_limits(
            namespaces.Limits(
                cpu_s=limits["cpu_s"],
                address_space_bytes=baseline_vm_bytes + limits["memory_bytes"],
                file_size_bytes=limits["file_size_bytes"],
                open_files=limits["open_files"],
                threads=limits["threads"],
                stack_bytes=limits["stack_bytes"],
            )
        )
        for note in notes:
            os.write(3, (json.dumps({"t": "note", "msg": note}) + "\n").encode())
    except BaseException as exc:
        _setup_failed(3, exc)
    try:
        harness.run(job, limits["max_result_bytes"])
    finally:
        os._exit(71)


def _setup_failed(fd: int, exc: BaseException) -> None:
    try:
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        os.write(fd, (json.dumps({"t": "setup_error", "msg": message}) + "\n").encode())
    finally:
        os._exit(70)


def vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
