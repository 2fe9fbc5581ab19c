"""The console's handlers over real HTTP: every action's refusals, and what the actions change.

Each test runs the console in a thread over a private copy of a trained state (version 1
registered, PendingManualApproval)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest

from mlops.console import views
from mlops_local.registry import LocalRegistry
from tests.helpers import console_server, http, run_mlops


@pytest.fixture
def console(fresh_state):
    with console_server(fresh_state) as (base, token):
        yield base, token, fresh_state


def flash(headers: dict) -> tuple[str, str, str]:
    """Where an action sent the browser back to, and its message and kind."""
    location = urlsplit(headers["Location"])
    query = parse_qs(location.query)
    return location.path, query["message"][0], query["kind"][0]


def act(base: str, token: str, path: str, **form) -> tuple[str, str, str]:
    status, headers, _ = http(base, "POST", path, {"csrf": token, **form})
    assert status == 303
    return flash(headers)


@pytest.mark.parametrize("path", ["/registry", "/registry/1", "/executions", "/deployments",
                                  "/monitoring"])
def test_every_page_answers(console, path):
    base, _, _ = console
    status, headers, body = http(base, "GET", path)
    assert status == 200, body
    assert "Content-Security-Policy" in headers and "Traceback" not in body


def test_approve_with_a_comment_reaches_the_registry_and_twice_is_refused(console):
    base, token, state = console
    path, message, kind = act(base, token, "/registry/1/approve", comment="looks good: rmse 2.25")
    assert (path, kind) == ("/registry/1", "ok") and "Approved" in message
    package = LocalRegistry(state / "registry.db").describe_model_package("abalone-models/1")
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["ApprovalDescription"] == "looks good: rmse 2.25"
    assert "looks good: rmse 2.25" in run_mlops(state, "registry", "list").stdout
    assert act(base, token, "/registry/1/approve")[1:] == (
        "abalone-models/1 is already Approved; nothing changed", "error")
    status, _, page = http(base, "GET", "/registry/1?message=x")
    assert status == 200 and "looks good: rmse 2.25" in page


def test_reject_twice_is_refused(console):
    base, token, _ = console
    assert act(base, token, "/registry/1/reject", comment="no")[2] == "ok"
    assert act(base, token, "/registry/1/reject")[1] == (
        "abalone-models/1 is already Rejected; nothing changed")


@pytest.mark.parametrize(("version", "expected"), [
    ("7", "model package abalone-models/7 does not exist"),
    ("x", "version 'x' is not a version number"),
    ("%D9%A1", "is not a version number"),  # '١', a digit of another script
])
def test_unknown_or_malformed_versions(console, version, expected):
    base, token, _ = console
    path, message, kind = act(base, token, f"/registry/{version}/approve")
    assert (path, kind) == (f"/registry/{version}", "error") and expected in message
    status, _, body = http(base, "GET", f"/registry/{version}")
    assert status == 404 and "no such model version" in body and "Traceback" not in body


def test_cross_site_and_malformed_requests_are_refused(console):
    base, token, state = console
    wrong_token = token[:-1] + ("B" if token.endswith("A") else "A")
    cases = {
        "no token": ({}, {}),
        "a wrong token": ({"csrf": wrong_token}, {}),
        "a foreign origin": ({"csrf": token}, {"Origin": "http://evil.example"}),
        "no origin nor referer": ({"csrf": token}, {"Origin": ""}),
        "a foreign referer": ({"csrf": token}, {"Origin": "", "Referer": "http://evil/x"}),
        "a rebound host": ({"csrf": token}, {"Host": "evil.example:80"}),
    }
    for case, (form, headers) in cases.items():
        status, _, body = http(base, "POST", "/registry/1/approve", form, headers)
        assert status == 403, case
        assert "refused" in body and "Traceback" not in body
    assert http(base, "GET", "/registry", headers={"Host": "evil.example"})[0] == 403
    status, _, body = http(base, "GET", "/registry/1/approve")
    assert status == 405 and "POST" in body
    assert http(base, "POST", "/registry/1/nonsense", {"csrf": token})[0] == 404
    # the same Referer as the console's own pages send is taken without an Origin
    referer = {"Origin": "", "Referer": f"{base}/registry/1"}
    assert http(base, "POST", "/registry/1/approve", {"csrf": token}, referer)[0] == 303
    status = LocalRegistry(state / "registry.db").describe_model_package("abalone-models/1")
    assert status["ModelApprovalStatus"] == "Approved"


def test_deploy_refusals(console):
    base, token, _ = console
    _, message, kind = act(base, token, "/deployments/staging/deploy")
    assert (message, kind) == ("no approved model package in group 'abalone-models': "
                               "approve one first", "error")
    act(base, token, "/registry/1/approve")
    _, message, kind = act(base, token, "/deployments/prod/deploy")
    assert kind == "error"
    assert message.startswith("abalone-models/1 has not passed the staging endpoint test")
    _, message, kind = act(base, token, "/deployments/staging/stop")
    assert (message, kind) == ("no local endpoint is running for stage 'staging'", "error")
    _, message, kind = act(base, token, "/deployments/staging/gate")
    assert kind == "error" and "no local endpoint is running" in message
    assert "there is no stage 'qa'" in act(base, token, "/deployments/qa/deploy")[1]
    status, _, body = http(base, "GET", "/deployments/prod")
    assert status == 404 and "the prod endpoint is stopped" in body
    assert "mlops deploy prod" in body


def test_unknown_executions_and_logs(console):
    base, _, state = console
    for path in ("/executions/nope", "/executions/..%2f..%2fregistry",
                 "/executions/nope/steps/Train/log"):
        status, _, body = http(base, "GET", path)
        assert status == 404 and "Traceback" not in body, path
    execution = next((state / "executions").glob("*.json")).stem
    status, _, body = http(base, "GET", f"/executions/{execution}")
    assert status == 200 and "RegisterModel" in body
    status, headers, log = http(base, "GET", f"/executions/{execution}/steps/Train/log")
    assert status == 200 and headers["Content-Type"].startswith("text/plain") and log
    assert http(base, "GET", f"/executions/{execution}/steps/Nope/log")[0] == 404


def test_the_report_route_serves_only_monitoring_files(console):
    base, _, state = console
    report = state / "s3" / "mlops-local" / "abalone" / "monitoring" / "staging" / "run"
    report.mkdir(parents=True)
    (report / "report.html").write_text("<html>drift</html>")
    status, headers, body = http(base, "GET", "/monitoring/staging/files/run/report.html")
    assert status == 200 and body == "<html>drift</html>"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for path in ("/monitoring/staging/files/../../../../../registry.db",
                 "/monitoring/staging/files/run/../../prod/x",
                 "/monitoring/staging/files/%2e%2e/%2e%2e/registry.db",
                 "/monitoring/qa/files/run/report.html",
                 "/monitoring/staging/files/run"):
        status, _, body = http(base, "GET", path)
        assert status == 404 and "drift" not in body, path


def test_an_unexpected_error_is_a_one_line_page(console, monkeypatch, capsys):
    base, _, _ = console

    def broken(cfg):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(views, "registry", broken)
    status, _, body = http(base, "GET", "/registry")
    assert status == 500 and "internal error" in body
    assert "secret detail" not in body and "Traceback" not in body
    assert "secret detail" in capsys.readouterr().err
    assert http(base, "GET", "/nowhere")[0] == 404


def test_the_command_prints_its_url_and_refuses_a_busy_port(fresh_state):
    env = {**os.environ, "MLOPS_HOME": str(fresh_state), "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-m", "mlops.cli", "console", "--port", "0"],
                               env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        base = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert base, line
        assert http(base.group(0), "GET", "/registry")[0] == 200
        busy = run_mlops(fresh_state, "console", "--port", base.group(1))
        assert busy.returncode == 2
        assert f"cannot listen on 127.0.0.1:{base.group(1)}" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_failed_gate_is_the_last_result_and_promotion_still_needs_a_pass(console):
    from mlops_local import deploy

    base, token, state = console
    package = LocalRegistry(state / "registry.db").describe_model_package("abalone-models/1")
    checks = [{"name": "rmse", "passed": False, "detail": "rmse 9.1 above 2.7"}]
    deploy.record_gate("staging", package, checks, passed=False)
    _, _, page = http(base, "GET", "/deployments")
    assert re.search(r"version 1 <span[^>]*>failed</span>", page) and "rmse 9.1 above 2.7" in page
    assert deploy.passed_gate("staging") is None
    act(base, token, "/registry/1/approve")
    _, message, kind = act(base, token, "/deployments/prod/deploy")
    assert kind == "error" and "has not passed the staging endpoint test" in message
