"""Batch scoring end to end: `mlops batch run` with the registered model, as a person runs it,
the same rows through the staging endpoint, and the schedule's template in moto."""

from __future__ import annotations

import ast
import json
import shutil

import boto3
import numpy as np
import pandas as pd
import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode.cfn_yaml import load as load_template
from moto import mock_aws

from mlops_core.config import ROOT
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore
from model_deploy import gate
from tests.helpers import run_mlops

TEMPLATE = ROOT / "cloudformation" / "batch.yml"
REGION = "us-east-1"


def lines_of(frame: pd.DataFrame) -> list[str]:
    return frame.to_csv(header=False, index=False).splitlines()


@pytest.fixture(scope="module")
def scored(trained_state, tmp_path_factory):
    """Version 1 approved, then the features of its test split scored by `mlops batch run`."""
    root = tmp_path_factory.mktemp("batch")
    state = root / "state"
    shutil.copytree(trained_state, state)
    approve = run_mlops(state, "registry", "approve", "1")
    assert approve.returncode == 0, approve.stdout + approve.stderr
    package = LocalRegistry(state / "registry.db").describe_model_package("abalone-models/1")
    test_csv = LocalStore(state / "s3").path(package["CustomerMetadataProperties"]["TestDataUri"])
    features = pd.read_csv(test_csv).iloc[:, :-1]  # the target is the last column
    rows = root / "test-rows.csv"
    rows.write_text("".join(line + "\n" for line in lines_of(features)))
    output = root / "out" / "test-rows.out"
    result = run_mlops(state, "batch", "run", "--input", str(rows), "--output", str(output))
    assert result.returncode == 0, result.stdout + result.stderr
    return state, rows, output, result.stdout


def test_batch_scores_equal_the_staging_endpoints(scored):
    state, rows, output, stdout = scored
    inputs = rows.read_text().splitlines()
    joined = output.read_text().splitlines()
    assert f"scored {len(inputs)} rows with abalone-models/1" in stdout
    assert "no row refused" in stdout
    assert [line.rsplit(",", 1)[0] for line in joined] == inputs

    deployed = run_mlops(state, "deploy", "staging")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    try:
        url = json.loads((state / "endpoints" / "staging.json").read_text())["url"]
        status, answer = gate.post(url, rows.read_bytes(), "text/csv", "text/csv")
    finally:
        run_mlops(state, "endpoint", "stop", "staging")
    assert status == 200, answer
    np.testing.assert_allclose([float(line.rsplit(",", 1)[1]) for line in joined],
                               [float(v) for v in answer.decode().split()], rtol=1e-12)


def test_bad_rows_are_reported_beside_the_output_not_dropped(scored, tmp_path):
    state, rows, _, _ = scored
    lines = rows.read_text().splitlines()[:40]
    lines[2] = "sex,length,diameter,height,whole,shucked,viscera,shell"  # a stray header
    lines[30] = "F,0.5,0.4,,0.5,0.2,0.1,0.15"  # a missing value
    source = tmp_path / "mixed.csv"
    source.write_text("".join(line + "\n" for line in lines))

    result = run_mlops(state, "batch", "run", "--input", str(source))

    assert result.returncode == 0, result.stdout + result.stderr
    output = ROOT / "build" / "batch" / "mixed.csv.out"
    errors = output.with_name("mixed.csv.out.errors.jsonl")
    refused = [json.loads(line) for line in errors.read_text().splitlines()]
    assert len(output.read_text().splitlines()) + len(refused) == len(lines)
    assert [(e["line"], e["row"]) for e in refused] == [(3, lines[2]), (31, lines[30])]
    assert "2 rows refused" in result.stdout
    assert "line 3: column 'sex': 'sex' is an unknown category" in result.stdout
    assert "line 31: column 'height': '' is a missing value" in result.stdout


def test_the_sdk_definition_is_what_the_engine_ran(scored):
    state, _, _, _ = scored
    definitions = [json.loads(p.read_text()) for p in (state / "definitions").glob("local-*")]
    batch = next(d for d in definitions if any(s["Type"] == "Transform" for s in d["Steps"]))
    model, transform = batch["Steps"]
    assert model["Arguments"]["Containers"] == [
        {"ModelPackageName": {"Get": "Parameters.ModelPackageArn"}}]
    arguments = transform["Arguments"]
    assert arguments["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}
    assert arguments["TransformInput"]["ContentType"] == "text/csv"
    assert arguments["TransformInput"]["SplitType"] == "Line"
    assert arguments["BatchStrategy"] == "MultiRecord"
    assert arguments["DataProcessing"] == {"JoinSource": "Input"}
    assert arguments["TransformOutput"]["Accept"] == "text/csv"
    assert {"Get": "Execution.PipelineExecutionId"} in (
        arguments["TransformOutput"]["S3OutputPath"]["Std:Join"]["Values"])


def test_no_approved_package_is_one_clear_error_and_writes_nothing(fresh_state, tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15\n")
    output = tmp_path / "scores.out"

    result = run_mlops(fresh_state, "batch", "run", "--input", str(source), "--output",
                       str(output))

    assert result.returncode == 2
    assert "no approved model package in group 'abalone-models': approve one first" in (
        result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert not output.exists()
    assert not (fresh_state / "s3" / "mlops-local" / "abalone" / "batch").exists()


# ---------------------------------------------------------------------------- the schedule


def test_template_is_lint_clean():
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=[REGION]))
    assert [str(m) for m in matches] == []


@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
def test_schedule_stack_deploys_with_least_privilege_roles():
    """moto builds the IAM roles and leaves the pipeline and schedule as placeholders, so
    the copy names the pipeline where the template refers to it."""
    template = json.loads(json.dumps(load_template(str(TEMPLATE))).replace(
        "${BatchPipeline}", "abalone-batch"))
    package = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/abalone-models/3"
    parameters = {"ProjectName": "abalone", "ModelPackageArn": package,
                  "ExecutionRoleArn": "arn:aws:iam::123456789012:role/abalone-sagemaker",
                  "ArtifactBucket": "abalone-data", "DefinitionKey": "abalone/batch/def.json",
                  "KmsKeyArn": f"arn:aws:kms:{REGION}:123456789012:key/1234abcd"}
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(
            StackName="abalone-batch", TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM"])
        stack = cloudformation.describe_stacks(StackName="abalone-batch")["Stacks"][0]
        resources = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in
                     cloudformation.describe_stack_resources(StackName="abalone-batch")[
                         "StackResources"] if "LogicalResourceId" in r}  # not placeholders
        iam = boto3.client("iam", region_name=REGION)

        def statements(role: str) -> list[dict]:
            name = iam.list_role_policies(RoleName=resources[role])["PolicyNames"][0]
            document = iam.get_role_policy(RoleName=resources[role], PolicyName=name)
            # moto's CloudFormation stores an inline policy as the repr of a Python dict.
            return ast.literal_eval(document["PolicyDocument"])["Statement"]

        scheduler, pipeline = statements("SchedulerRole"), statements("PipelineRole")

    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["ModelPackageArn"] == package
    account = "123456789012"  # moto's
    assert scheduler == [{"Effect": "Allow", "Action": "sagemaker:StartPipelineExecution",
                          "Resource": f"arn:aws:sagemaker:{REGION}:{account}:pipeline/"
                                      "abalone-batch"}]
    by_sid = {s["Sid"]: s for s in pipeline}
    assert by_sid["PassModelRole"]["Resource"] == parameters["ExecutionRoleArn"]
    definition = "arn:aws:s3:::abalone-data/abalone/batch/def.json"
    assert by_sid["ReadDefinition"]["Resource"] == definition
    # The project bucket encrypts with the project key: the role may decrypt with it, only.
    assert by_sid["DecryptDefinition"] == {"Sid": "DecryptDefinition", "Effect": "Allow",
                                           "Action": "kms:Decrypt",
                                           "Resource": parameters["KmsKeyArn"]}
    assert all("*" != s["Resource"] for s in pipeline)
    schedule = template["Resources"]["BatchSchedule"]["Properties"]["Target"]
    assert {"Name": "ModelPackageArn", "Value": {"Ref": "ModelPackageArn"}} in (
        schedule["SageMakerPipelineParameters"]["PipelineParameterList"])


@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
def test_batch_deploy_uploads_the_definition_and_schedules_the_approved_model(
        tmp_path, monkeypatch, project_config):
    """`mlops batch deploy` on the aws target, against moto: newest approved package in the
    stack parameters, the definition uploaded where the stack reads it."""
    from mlops_core import targets
    from model_deploy import build

    copy = tmp_path / "batch.yml"
    copy.write_text(json.dumps(json.loads(json.dumps(load_template(str(TEMPLATE))).replace(
        "${BatchPipeline}", "abalone-batch"))))
    monkeypatch.setattr(build, "BATCH_TEMPLATE", copy)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_BUCKET", "abalone-data")
    monkeypatch.setenv("MLOPS_ROLE_ARN", "arn:aws:iam::123456789012:role/abalone-sagemaker")
    key_arn = f"arn:aws:kms:{REGION}:123456789012:key/project-key"
    monkeypatch.setenv("MLOPS_KMS_KEY_ARN", key_arn)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="abalone-data")
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        group = project_config.model_package_group
        sagemaker.create_model_package_group(ModelPackageGroupName=group)
        arns = [sagemaker.create_model_package(
            ModelPackageGroupName=group, ModelApprovalStatus=status,
            InferenceSpecification={
                "Containers": [{"Image": "sklearn", "ModelDataUrl": f"s3://abalone-data/m{i}"}],
                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"],
            })["ModelPackageArn"] for i, status in enumerate(["Approved", "Approved", "Rejected"])]
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        outputs = build.deploy_batch_stack(project_config, targets.aws(project_config, s3),
                                           sagemaker=sagemaker, cloudformation=cloudformation,
                                           echo=lambda line: None)
        stack = cloudformation.describe_stacks(StackName="abalone-batch")["Stacks"][0]
        parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
        uploaded = json.loads(s3.get_object(Bucket="abalone-data",
                                            Key=parameters["DefinitionKey"])["Body"].read())
    assert outputs["ModelPackageArn"] == arns[1] == parameters["ModelPackageArn"]
    assert parameters["KmsKeyArn"] == key_arn
    assert parameters["DefinitionKey"].startswith(f"{project_config.project}/code/batch/")
    # The schedule the deploy pipeline's batch action uses: model_deploy/batch-config.json.
    configured = json.loads((build.HERE / build.BATCH_CONFIG).read_text())["Parameters"]
    assert configured.items() <= parameters.items()
    assert [s["Type"] for s in uploaded["Steps"]] == ["Model", "Transform"]
    assert "s3://abalone-data/" in json.dumps(uploaded)
