"""`mlops registry approve/reject` as a person runs them: the version numbers they take,
repeated decisions, and a rejection of a version that an endpoint still serves."""

from __future__ import annotations

import pytest

from mlops_local.registry import LocalRegistry
from tests.helpers import run_mlops


def status_of(state, group: str, version: int = 1) -> str:
    package = LocalRegistry(state / "registry.db").describe_model_package(f"{group}/{version}")
    return package["ModelApprovalStatus"]


@pytest.mark.parametrize("version", ["١", "²", "1.0", "-1", "one"])
def test_only_ascii_digits_are_a_version(fresh_state, project_config, version):
    result = run_mlops(fresh_state, "registry", "approve", version)

    assert result.returncode == 2
    assert f"version {version!r} is not a version number: give ASCII digits" in (
        " ".join(result.stderr.split()))
    assert "Traceback" not in result.stderr and "int()" not in result.stderr
    assert status_of(fresh_state, project_config.model_package_group) == "PendingManualApproval"


def test_repeating_a_decision_says_so_and_changes_nothing(fresh_state, project_config):
    group = project_config.model_package_group
    assert run_mlops(fresh_state, "registry", "approve", "1", "--note", "first").returncode == 0
    before = LocalRegistry(fresh_state / "registry.db").describe_model_package(f"{group}/1")

    again = run_mlops(fresh_state, "registry", "approve", "1", "--note", "second")

    assert again.returncode == 0, again.stderr
    assert f"{group}/1 is already Approved; nothing changed" in again.stdout
    after = LocalRegistry(fresh_state / "registry.db").describe_model_package(f"{group}/1")
    assert after == before  # the note and the modification time are the first approval's


def test_rejecting_a_served_version_names_the_stages_serving_it(fresh_state, project_config):
    group = project_config.model_package_group
    assert run_mlops(fresh_state, "registry", "approve", "1").returncode == 0
    deployed = run_mlops(fresh_state, "deploy", "staging")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    try:
        rejected = run_mlops(fresh_state, "registry", "reject", "1")
    finally:
        run_mlops(fresh_state, "endpoint", "stop", "staging")

    assert rejected.returncode == 0, rejected.stderr
    assert f"{group}/1: Rejected" in rejected.stdout
    warning = " ".join(rejected.stderr.split())
    assert f"warning: the local staging endpoint still serves {group}/1" in warning
    assert "prod" not in warning
    assert status_of(fresh_state, group) == "Rejected"


def test_rejecting_a_version_nothing_serves_warns_of_nothing(fresh_state, project_config):
    rejected = run_mlops(fresh_state, "registry", "reject", "1")

    assert rejected.returncode == 0, rejected.stderr
    assert rejected.stderr == ""
    assert status_of(fresh_state, project_config.model_package_group) == "Rejected"
