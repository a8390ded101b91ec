"""`effirl sandbox audit` on this machine: every attack class run for real, and the predicates that judge
them, shown to say NOT CONTAINED where a sandbox is broken (synthetic verdicts) or weak (``process``)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from sandbox.attacks import ATTACKS
from sandbox.audit import (
    CLASS_KEYS,
    Attack,
    Context,
    Observation,
    Outcome,
    Report,
    Result,
    render,
    run_attacks,
    select,
)
from sandbox.config import SandboxConfig
from sandbox.local_audit import audit_local

# Attacks that work today, each with its reproducer in tests/sandbox/test_audit_findings.py.
SERVICE_SIDE = {"cache_growth", "event_loop", "json_depth"}


@pytest.fixture(scope="module")
def report() -> Report:
    return audit_local("namespaces", "worker", probe=False)


def outcome(report: Report, name: str) -> Result:
    return next(r for r in report.results if r.name == name)


def test_the_local_audit_finds_every_known_attack_contained(report: Report) -> None:
    assert report.isolation == "namespaces" and report.scope == "worker"
    assert "namespaces (worker scope)" in report.header[0]
    assert {r.cls for r in report.results} == set(CLASS_KEYS)
    for result in report.results:
        expected = Outcome.CONTAINED
        if result.cls == "script":
            expected = Outcome.WEAK_BY_DESIGN
        elif result.cls in SERVICE_SIDE or (result.cls == "uids" and os.geteuid() != 0):
            expected = Outcome.NOT_APPLICABLE
        assert result.outcome is expected, (result.name, result.outcome, result.reason)


def test_a_python_events_cost_is_an_untrusted_measure() -> None:
    counting = audit_local(
        config=SandboxConfig(workers=1, count_python_events=True), classes=["python_events"], probe=False
    )
    [result] = counting.results
    assert result.outcome is Outcome.UNTRUSTED_MEASURE and "counted inside the candidate" in result.reason
    assert counting.exit_code == 0  # an opt-in that says so, not a failure


def test_the_report_renders_as_a_table_and_as_json(report: Report) -> None:
    text = render(report)
    assert " 1. forged pass from another job's memory" in text and "13. classic escapes" in text
    assert "contained         scan_own_memory" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["exit_code"] == report.exit_code and len(data["findings"]) == len(ATTACKS)
    assert {"class", "attack", "outcome", "reason"} <= set(data["findings"][0])


def test_a_weak_level_is_reported_not_contained() -> None:
    # isolation="process": no namespaces, the host's /proc, filesystem and pid space.
    weak = audit_local("process", classes=["repeats", "escapes"], probe=False)
    assert weak.exit_code == 1
    for name in ("environment_fingerprint", "host_processes", "write_outside_tmp", "host_files"):
        assert outcome(weak, name).outcome is Outcome.NOT_CONTAINED, (name, outcome(weak, name).reason)
    assert outcome(weak, "network").outcome is Outcome.CONTAINED  # seccomp allows AF_UNIX sockets only


# ----------------------------------------------------------- predicates on what a broken sandbox says

CONTEXT = Context(remote=False, isolation="namespaces", scope="worker", workers=1, nonce="ab12cd34ef56ab78")
REMOTE = Context(remote=True, isolation="namespaces", scope=None, workers=1, nonce="ab12cd34ef56ab78")


def judge(name: str, observations: list[Observation], context: Context = CONTEXT) -> tuple[Outcome, str]:
    attack = next(a for a in ATTACKS if a.name == name)
    finding = attack.judge(observations, context)
    return finding.outcome, finding.reason


def passed(total: int = 1, **fields: object) -> Observation:
    return Observation("passed", passed=total, total=total, test_errors=(None,) * total, **fields)


def failing(tests: dict[int, str], total: int, status: str = "failed", **fields: object) -> Observation:
    errors = tuple(tests.get(i) for i in range(total))
    return Observation(status, total=total, passed=total - len(tests), test_errors=errors, **fields)


def test_memory_predicates() -> None:
    earlier = [passed()] * 4
    leak = failing({2: "wrong output"}, 4)
    assert judge("scan_own_memory", [*earlier, leak])[0] is Outcome.NOT_CONTAINED
    assert "input" in judge("scan_own_memory", [*earlier, leak])[1]
    blind = failing({0: "wrong output"}, 4)  # the control: its own input was not found
    assert judge("scan_own_memory", [*earlier, blind])[0] is Outcome.INCONCLUSIVE
    assert judge("scan_own_memory", [*earlier, Observation("timeout")])[0] is Outcome.INCONCLUSIVE
    assert judge("scan_own_memory", [*earlier, passed(4)])[0] is Outcome.CONTAINED


def test_script_predicates() -> None:
    forged = passed()
    assert judge("forged_script_record", [forged])[0] is Outcome.WEAK_BY_DESIGN
    assert judge("forged_script_record", [forged], REMOTE)[0] is Outcome.NOT_CONTAINED
    marked = Observation("passed", script_marked=True)
    assert judge("forged_script_record", [marked], REMOTE)[0] is Outcome.WEAK_BY_DESIGN
    refused = Observation("refused", refused="HTTP 400: unknown field test_script")
    assert judge("forged_script_record", [refused], REMOTE)[0] is Outcome.CONTAINED


def test_repeat_predicates() -> None:
    judged = failing({0: "wrong output"}, 1, error="run 3 of 20: 1 of 1 tests failed")
    first = failing({0: "wrong output"}, 1, error="1 of 1 tests failed")
    assert judge("random_answers", [first, passed()])[0] is Outcome.NOT_CONTAINED
    assert judge("random_answers", [first, judged])[0] is Outcome.CONTAINED
    assert judge("random_answers", [first, first])[0] is Outcome.INCONCLUSIVE
    differ = failing(
        {}, 1, error="run 2 of 6 returned other values than the first", error_kind="inconsistent_runs"
    )
    assert judge("environment_fingerprint", [differ])[0] is Outcome.NOT_CONTAINED
    remote = Observation(
        "sandbox_error",
        error_kind="bad_reference",
        error="... (failed: run 2 of 6 returned other values than the first)",
    )
    assert judge("environment_fingerprint", [remote], REMOTE)[0] is Outcome.NOT_CONTAINED


def test_channel_predicates() -> None:
    read = failing({0: "wrong output"}, 3, error="run 2 of 3: 1 of 3 tests failed")
    assert judge("page_cache_channel", [read])[0] is Outcome.NOT_CONTAINED
    refused = Observation("runtime_error", error="PermissionError: [Errno 1] Operation not permitted")
    assert judge("page_cache_channel", [refused])[0] is Outcome.CONTAINED
    no_file = failing({1: "wrong output", 2: "wrong output"}, 3, error="2 of 3 tests failed")
    assert judge("page_cache_channel", [no_file])[0] is Outcome.INCONCLUSIVE
    holds_nothing = failing({1: "wrong output"}, 2, error="1 of 2 tests failed")
    assert judge("tmpfs_inode_channel", [holds_nothing])[0] is Outcome.CONTAINED
    assert judge("tmpfs_inode_channel", [passed(2)])[0] is Outcome.CONTAINED


def test_cost_predicates() -> None:
    honest = passed(cpu_ns=50_000_000, cost_measure="cpu", cost_trusted=True)
    cheaper = passed(cpu_ns=5_000_000, cost_measure="cpu", cost_trusted=True)
    assert judge("tracing_switched_off", [honest, cheaper])[0] is Outcome.NOT_CONTAINED
    assert judge("tracing_switched_off", [honest, honest])[0] is Outcome.CONTAINED
    events = [
        passed(cpu_ns=50_000_000, python_events=960_322, cost_measure="python_events", cost_trusted=False),
        passed(cpu_ns=20_000_000, python_events=6, cost_measure="python_events", cost_trusted=False),
    ]
    verdict, reason = judge("tracing_switched_off", events)
    assert verdict is Outcome.UNTRUSTED_MEASURE and "960,322 to 6" in reason


def test_verdict_kind_record_and_exit_predicates() -> None:
    healthy = passed(2)
    assert judge("setup_error_at_import", [Observation("sandbox_error"), healthy])[0] is Outcome.NOT_CONTAINED
    assert judge("syntax_error_in_call", [Observation("syntax_error"), healthy])[0] is Outcome.NOT_CONTAINED
    assert judge("done_then_answer", [passed(2), healthy])[0] is Outcome.NOT_CONTAINED
    own = Observation("runtime_error", error_kind="protocol_violation")
    assert judge("bare_nan", [own, Observation("sandbox_error")])[0] is Outcome.NOT_CONTAINED  # pool broken
    assert judge("bare_nan", [own, healthy])[0] is Outcome.CONTAINED
    assert judge("os_exit", [Observation("passed", exit_code=0)])[0] is Outcome.NOT_CONTAINED
    assert judge("os_exit", [Observation("runtime_error", exit_code=5)])[0] is Outcome.CONTAINED
    slow = failing({0: "malformed output: __set__ has ..."}, 1, elapsed_s=45.0)
    assert judge("set", [slow])[0] is Outcome.NOT_CONTAINED
    wide = Observation("timeout", elapsed_s=1.2)
    assert judge("wide_record", [wide, healthy])[0] is Outcome.CONTAINED


def test_escape_predicates() -> None:
    context = replace(CONTEXT, host_paths=("/etc/shadow", "/srv/secret"))
    assert judge("host_files", [failing({2: "wrong output"}, 3)], context)[0] is Outcome.NOT_CONTAINED
    assert judge("host_files", [failing({0: "wrong output"}, 3)], context)[0] is Outcome.INCONCLUSIVE
    assert judge("network", [failing({0: "wrong output"}, 6)])[0] is Outcome.NOT_CONTAINED
    assert judge("host_processes", [failing({1: "wrong output"}, 2)])[0] is Outcome.NOT_CONTAINED
    write, later = passed(10), failing({4: "wrong output"}, 9)
    verdict, reason = judge("write_outside_tmp", [write, later])
    assert verdict is Outcome.NOT_CONTAINED and "/dev/shm/" in reason
    reached = failing({0: "wrong output"}, 1, error="run 2 of 3: 1 of 1 tests failed")
    assert judge("outlive_the_run", [reached])[0] is Outcome.NOT_CONTAINED


def test_what_fails_the_audit() -> None:
    def report_of(*outcomes: Outcome) -> Report:
        return Report("x", "namespaces", "worker", [], [Result("c", "a", "", o, "", 0.0) for o in outcomes])

    assert report_of(Outcome.CONTAINED, Outcome.WEAK_BY_DESIGN, Outcome.UNTRUSTED_MEASURE).exit_code == 0
    assert report_of(Outcome.NOT_APPLICABLE, Outcome.NOT_MEASURABLE).exit_code == 0
    assert report_of(Outcome.CONTAINED, Outcome.NOT_CONTAINED).exit_code == 1
    assert report_of(Outcome.INCONCLUSIVE).exit_code == 1  # nothing was shown either way


def test_an_attack_that_cannot_run_is_inconclusive_not_a_crash() -> None:
    def broken(context: Context):
        raise RuntimeError("no such thing")

    attack = Attack("memory", "broken", "nothing", custom=broken)
    [result] = run_attacks([attack], lambda step: Observation("passed"), CONTEXT)
    assert result.outcome is Outcome.INCONCLUSIVE and "no such thing" in result.reason


def test_unknown_classes_are_named() -> None:
    with pytest.raises(ValueError, match="unknown attack class 'memroy'; known: memory, script"):
        select(ATTACKS, ["memroy"])
    assert {a.cls for a in select(ATTACKS, ["escapes"])} == {"escapes"}
