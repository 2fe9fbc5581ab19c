"""The deploy half on the local target, driven through the CLI: approve -> staging -> gate ->
prod, and every refusal on the way leaves the state as it was."""

from __future__ import annotations

import json

import pytest

from mlops_local.registry import LocalRegistry
from tests.helpers import run_mlops

ROW = "M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15\nF,0.53,0.42,0.135,0.677,0.2565,0.1415,0.21\n"


@pytest.fixture
def state(fresh_state):
    yield fresh_state
    for stage in ("staging", "prod"):
        run_mlops(fresh_state, "endpoint", "stop", stage)


def statuses(state, group) -> dict[int, str]:
    summaries = LocalRegistry(state / "registry.db").list_model_packages(
        ModelPackageGroupName=group)["ModelPackageSummaryList"]
    return {s["ModelPackageVersion"]: s["ModelApprovalStatus"] for s in summaries}


def test_refusals_change_nothing(state, project_config):
    group = project_config.model_package_group
    before = statuses(state, group)
    assert before == {1: "PendingManualApproval"}

    result = run_mlops(state, "deploy", "staging")
    assert result.returncode == 2
    assert f"no approved model package in group '{group}'" in " ".join(result.stderr.split())
    assert not (state / "endpoints" / "staging.json").exists()

    result = run_mlops(state, "registry", "approve", "7")
    assert result.returncode == 2 and f"{group}/7 does not exist" in result.stderr
    assert statuses(state, group) == before

    assert run_mlops(state, "registry", "approve", "1").returncode == 0
    result = run_mlops(state, "deploy", "prod")
    assert result.returncode == 2
    assert "has not passed the staging endpoint test" in " ".join(result.stderr.split())
    assert not (state / "endpoints" / "prod.json").exists()


def test_staging_gate_then_prod(state, project_config, tmp_path):
    assert run_mlops(state, "registry", "approve", "1").returncode == 0
    listing = run_mlops(state, "registry", "list")
    assert "Approved" in listing.stdout

    deployed = run_mlops(state, "deploy", "staging")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    record = json.loads((state / "endpoints" / "staging.json").read_text())
    assert record["model_info"]["ModelPackageVersion"] == 1
    assert record["capture_uri"].endswith("/datacapture/staging/v1")

    rows = tmp_path / "rows.csv"
    rows.write_text(ROW)
    invoked = run_mlops(state, "endpoint", "invoke", "staging", "--file", str(rows))
    assert invoked.returncode == 0, invoked.stdout
    predictions = [float(line) for line in invoked.stdout.split()]
    assert len(predictions) == 2 and all(1 <= p <= 30 for p in predictions)

    bad = tmp_path / "bad.csv"
    bad.write_text("M,0.455\n")
    refused = run_mlops(state, "endpoint", "invoke", "staging", "--file", str(bad))
    assert refused.returncode == 1 and "400" in refused.stdout

    gate = run_mlops(state, "endpoint", "test", "staging")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "endpoint test passed" in gate.stdout
    assert "refuses unknown category" in gate.stdout

    promoted = run_mlops(state, "deploy", "prod")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    status = run_mlops(state, "endpoint", "status")
    assert status.stdout.count("InService") == 2
    prod = json.loads((state / "endpoints" / "prod.json").read_text())
    assert prod["model_info"]["ModelPackageVersion"] == 1
    assert prod["capture_uri"].endswith("/datacapture/prod/v1")
