"""The rehearsal's pieces: the aws names and where they come from, the profile apart from the
target, and the member-by-member diff of two definitions (on small hand-written ones)."""

from __future__ import annotations

import pytest

from mlops_core import config as project_config
from mlops_core import targets
from mlops_local.store import LocalStore
from model_build import definition, rehearsal
from model_build.rehearsal import NAMES, ONLY, PROFILES, UNEXPLAINED
from tests.helpers import offline, run_mlops


def test_aws_names_say_where_they_come_from(monkeypatch):
    config = project_config.load()
    monkeypatch.setenv("MLOPS_BUCKET", "abalone-data")
    monkeypatch.delenv("MLOPS_ROLE_ARN", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    names = targets.aws_names(config)
    assert (names["bucket"].value, names["bucket"].source) == ("abalone-data", "MLOPS_BUCKET")
    assert (names["region"].value, names["region"].source) == ("eu-west-1", "AWS_DEFAULT_REGION")
    assert names["role"].value == ""
    assert names["role"].source == ("in CodeBuild MLOPS_ROLE_ARN is the project stack's "
                                    "ExecutionRoleArn output")
    offline = targets.aws_offline(config, LocalStore())
    assert (offline.name, offline.profile, offline.bucket) == ("aws", "aws", "abalone-data")
    assert offline.role == targets.PLACEHOLDERS["role"]


def test_the_profile_is_the_targets_own_unless_it_rehearses(tmp_path):
    config = project_config.load()
    store = LocalStore(tmp_path)
    local, rehearsal_target = targets.local(config, store), targets.local(config, store, "aws")
    assert (local.profile, rehearsal_target.profile) == ("local", "aws")
    assert (rehearsal_target.name, rehearsal_target.bucket) == ("local", local.bucket)
    # The steps differ, so the cached definitions must too.
    assert definition.fingerprint(config, local) != definition.fingerprint(config,
                                                                            rehearsal_target)


def test_the_aws_definition_builds_offline_with_placeholders(tmp_path, tmp_path_factory,
                                                             monkeypatch):
    """What `mlops pipeline diff` compares with, built with no credentials, no network and no
    aws names configured: the placeholders, uploaded to the local stand-in for the bucket."""
    for name in ("MLOPS_BUCKET", "MLOPS_ROLE_ARN", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    config = project_config.load()
    store = LocalStore(tmp_path / "aws-offline")
    target = targets.aws_offline(config, store)
    with offline(tmp_path_factory):
        text, reused = definition.cached(config, target)
    assert not reused and '"Name": "Tune"' in text
    for placeholder in targets.PLACEHOLDERS.values():
        assert placeholder in text
    assert (tmp_path / "aws-offline" / targets.PLACEHOLDERS["bucket"]).is_dir()


LOCAL = {"Parameters": [{"Name": "Input", "DefaultValue": "s3://here/data.csv"}],
         "Steps": [{"Name": "Prepare", "Type": "Processing",
                    "Arguments": {"RoleArn": "arn:local", "Image": "1.dkr.ecr.r1.amazonaws.com/x",
                                  "Outputs": [{"OutputName": "a", "Uri": "s3://here/a"},
                                              {"OutputName": "b", "Uri": "s3://here/b"}]}}]}


def _aws():
    return {"Parameters": [{"Name": "Input", "DefaultValue": "s3://there/data.csv"}],
            "Steps": [{"Name": "Prepare", "Type": "Processing",
                       "Arguments": {"RoleArn": "arn:aws",
                                     "Image": "2.dkr.ecr.r2.amazonaws.com/x",
                                     "Outputs": [{"OutputName": "b", "Uri": "s3://there/b"},
                                                 {"OutputName": "a", "Uri": "s3://there/a"}]}}]}


def test_members_are_json_paths_with_named_list_items():
    aws = _aws()
    aws["Steps"][0]["Arguments"]["Outputs"][0]["Extra"] = 1
    assert rehearsal.members(LOCAL, aws) == [
        ("Parameters[Input].DefaultValue", "s3://here/data.csv", "s3://there/data.csv"),
        ("Steps[Prepare].Arguments.Image", "1.dkr.ecr.r1.amazonaws.com/x",
         "2.dkr.ecr.r2.amazonaws.com/x"),
        ("Steps[Prepare].Arguments.Outputs[a].Uri", "s3://here/a", "s3://there/a"),
        ("Steps[Prepare].Arguments.Outputs[b].Extra", ONLY, 1),
        ("Steps[Prepare].Arguments.Outputs[b].Uri", "s3://here/b", "s3://there/b"),
        ("Steps[Prepare].Arguments.RoleArn", "arn:local", "arn:aws"),
    ]
    # Objects with no key in common (a Get against a Std:Join) are one member.
    assert rehearsal.members({"v": {"Get": "x"}}, {"v": {"Std:Join": {}}}) == [
        ("v", {"Get": "x"}, {"Std:Join": {}})]


def _explain(local, aws):
    swaps = [rehearsal.Swap("bucket", "there", "here", "MLOPS_BUCKET"),
             rehearsal.Swap("role", "arn:aws", "arn:local", "MLOPS_ROLE_ARN"),
             rehearsal.Swap("image registry", "2.dkr.ecr.r2.amazonaws.com",
                            "1.dkr.ecr.r1.amazonaws.com", "follows the region")]
    return rehearsal.explain(project_config.load(), rehearsal.Comparison("local", "aws", swaps),
                             (local, aws), (dict, dict))


def test_names_explain_a_rehearsal_and_anything_else_is_unexplained():
    comparison = _explain(LOCAL, _aws())
    assert {d.kind for d in comparison.differences} == {NAMES}
    assert "nothing else differs" in comparison.lines()
    aws = _aws()
    aws["Steps"][0]["Arguments"]["RoleArn"] = "arn:aws-other"
    (odd,) = _explain(LOCAL, aws).of(UNEXPLAINED)
    assert odd.line() == ('Steps[Prepare].Arguments.RoleArn: local "arn:local", aws '
                          '"arn:aws-other": NOT explained by the names or the profiles')


def test_a_training_step_against_a_tuning_step_is_explained_by_the_profiles():
    config = project_config.load()
    local = {"Parameters": [{"Name": "C"}], "Steps": [
        {"Name": "Train", "Type": "Training",
         "Arguments": {"HyperParameters": {"C": {"Get": "Parameters.C"}}}},
        {"Name": "Evaluate", "Type": "Processing",
         "Arguments": {"Model": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}}}]}
    aws = {"Parameters": [], "Steps": [
        {"Name": "Tune", "Type": "Tuning", "Arguments": {"TrainingJobDefinition": {}}},
        {"Name": "Evaluate", "Type": "Processing",
         "Arguments": {"Model": {"Std:Join": {"Values": [
             {"Get": "Steps.Tune.TrainingJobSummaries[0].TrainingJobName"}]}}}}]}
    comparison = _explain(local, aws)
    assert comparison.of(UNEXPLAINED) == []
    lines = [d.line() for d in comparison.of(PROFILES)]
    assert "Steps[Train] only in local: the local profile trains once ([tuning] local = false)" \
        in lines
    assert (f"Steps[Tune] only in aws: the aws profile tunes ([tuning] aws = true: "
            f"{config.tuning.max_jobs} Bayesian trials of validation:rmse)") in lines
    assert any(line.startswith("Parameters[C] only in local: the aws profile's tuning job "
                               "picks C ([tuning.ranges.C])") for line in lines)
    assert any(line.startswith("Steps[Evaluate].Arguments.Model: ") and line.endswith(
        "reads the Train step locally and the Tune step on aws, the steps the profiles "
        "differ in") for line in lines)


@pytest.mark.parametrize("args", [("--profile", "aws", "--target", "aws"),
                                  ("--profile", "aws", "--definition", "x.json")])
def test_profile_is_for_local_runs_only(tmp_path, args):
    result = run_mlops(tmp_path, "pipeline", "run", *args)
    assert result.returncode == 2
    assert "--profile rehearses a target's definition on this machine" in result.stderr
    assert "Traceback" not in result.stderr
