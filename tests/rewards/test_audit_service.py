"""`effirl sandbox audit --url`: the same attacks against a real reward service on loopback."""

from __future__ import annotations

import pytest

from rewards.audit import AuditUsageError, audit_service, observe_evaluation, observe_run_code, script_marked
from rewards.service import RewardService, ServiceConfig
from rewards.settings import RewardSettings
from sandbox.audit import Outcome, Report

TOKEN = "audit-test-token-5e1f"


@pytest.fixture(scope="module")
def service(box):
    with RewardService(ServiceConfig(port=0), sandbox=box) as running:
        yield running


@pytest.fixture(scope="module")
def report(service) -> Report:
    return audit_service(service.url)


def test_the_service_audit_runs_every_class_over_http(report: Report, service) -> None:
    assert report.target == service.url and report.isolation == "namespaces"
    assert "auth off" in report.header[0] and "cost measure cpu" in report.header[0]
    seen = {r.name: r for r in report.results}
    for name in ("two_sandboxes", "random_program_output"):
        assert seen[name].outcome is Outcome.NOT_APPLICABLE and "remotely" in seen[name].reason
    # A test_script-only submission: refused today; a service may also accept it, marked as script trust.
    assert seen["forged_script_record"].outcome in (Outcome.CONTAINED, Outcome.WEAK_BY_DESIGN)
    for name in ("printed_output_kept", "slow_to_compile", "deep_bodies"):
        assert seen[name].outcome is Outcome.CONTAINED, (name, seen[name].reason)
    for result in report.results:
        if result.name == "forged_script_record":
            continue
        if result.outcome is not Outcome.NOT_APPLICABLE:
            assert result.outcome is Outcome.CONTAINED, (result.name, result.outcome, result.reason)


def test_an_unreachable_url_or_a_wrong_token_is_a_one_line_error(box) -> None:
    with pytest.raises(AuditUsageError, match=r"no reward service answers at http://127\.0\.0\.1:1"):
        audit_service("http://127.0.0.1:1")
    with pytest.raises(AuditUsageError, match="must look like http"):
        audit_service("127.0.0.1:8080")
    with RewardService(ServiceConfig(port=0, token=TOKEN), sandbox=box) as guarded:
        with pytest.raises(AuditUsageError, match="refused the token"):
            audit_service(guarded.url, token="wrong")
        report = audit_service(guarded.url, token=TOKEN, classes=["json_depth", "exit_status"])
    assert report.exit_code == 0 and "auth on" in report.header[0]
    assert {r.outcome for r in report.results} == {Outcome.CONTAINED}


def test_a_service_that_rewards_python_events_says_so() -> None:
    settings = RewardSettings(cost_measure="python_events")
    with RewardService(ServiceConfig(port=0, workers=1, reward=settings)) as counting:
        report = audit_service(counting.url, classes=["python_events"])
    [result] = report.results
    assert result.outcome is Outcome.UNTRUSTED_MEASURE and "(NOT trusted)" in report.header[0]


def test_json_answers_map_onto_the_plain_verdict_fields() -> None:
    result = {
        "status": "failed",
        "passed": 1,
        "total": 3,
        "details": {
            "error": "2 of 3 tests failed",
            "error_kind": "wrong_output",
            "failed_tests": [{"index": 0, "error": "wrong output"}, {"index": 2, "error": "wrong output"}],
            "measured": {"cpu_ns": 1234, "python_events": None},
            "cost_measure": "cpu",
            "cost_trusted": True,
        },
    }
    seen = observe_evaluation(result, 0.5)
    assert seen.test_errors == ("wrong output", None, "wrong output") and seen.cpu_ns == 1234
    assert seen.failed_test(0) and not seen.failed_test(1) and seen.error_kind == "wrong_output"
    assert script_marked({"status": "passed", "details": {"trust_level": "script"}})
    assert not script_marked(result)
    run = {
        "status": "Failed",
        "run_result": {"status": "Finished", "return_code": 4, "stdout": "ok\n", "stderr": ""},
    }
    assert observe_run_code(run, "ok\n", 0.1).exit_code == 4
    assert observe_run_code(run, "ok\n", 0.1).status == "runtime_error"
    crashed = {"status": "SandboxError", "message": "monitor died", "run_result": {"status": "Error"}}
    assert observe_run_code(crashed, "", 0.1).status == "sandbox_error"
