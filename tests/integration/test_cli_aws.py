"""The aws target of the CLI, run as CodeBuild runs it, against a moto server on 127.0.0.1.

`AWS_ENDPOINT_URL` sends every boto3 call of the `mlops` process to the local moto server,
so the command line itself (argument parsing, credentials, printing, exit codes) is tested,
not only the functions behind it. Nothing leaves the machine.
"""

from __future__ import annotations

import json

import boto3
import pytest
from moto.server import ThreadedMotoServer

from mlops_core import config as project_config
from tests.helpers import run_mlops

BUCKET = "abalone-data-cli"
ROLE = "arn:aws:iam::123456789012:role/abalone-sagemaker"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def aws_env(moto_server):
    boto3.client("s3", region_name=REGION, endpoint_url=moto_server).create_bucket(Bucket=BUCKET)
    return {"AWS_ENDPOINT_URL": moto_server, "MLOPS_BUCKET": BUCKET, "MLOPS_ROLE_ARN": ROLE}


def client(service: str, endpoint: str):
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def test_pipeline_run_aws_upserts_and_starts(tmp_path, aws_env, moto_server):
    """What buildspec.yml runs (`make run-aws`), without the wait (next test)."""
    config = project_config.load()
    result = run_mlops(tmp_path, "pipeline", "run", "--target", "aws",
                       "--param", "ModelApprovalStatus=Approved", env=aws_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INFO" not in result.stderr  # no SDK or botocore chatter in the build log

    sagemaker = client("sagemaker", moto_server)
    described = sagemaker.describe_pipeline(PipelineName=config.pipeline_name)
    assert described["RoleArn"] == ROLE
    definition = json.loads(described["PipelineDefinition"])
    # [tuning] aws = true in mlops.toml: a tuning step trains on this target.
    assert [(step["Name"], step["Type"]) for step in definition["Steps"]] == [
        ("ValidateAndPreprocess", "Processing"), ("DataQualityBaseline", "Processing"),
        ("Tune", "Tuning"), ("Evaluate", "Processing"), ("CheckMetric", "Condition")]
    (execution,) = sagemaker.list_pipeline_executions(
        PipelineName=config.pipeline_name)["PipelineExecutionSummaries"]
    assert execution["PipelineExecutionArn"] in result.stdout
    parameters = sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution["PipelineExecutionArn"])["PipelineParameters"]
    assert {"Name": "ModelApprovalStatus", "Value": "Approved"} in parameters
    # The code the definition references was uploaded to the bucket, nowhere else.
    keys = [o["Key"] for o in client("s3", moto_server).list_objects_v2(
        Bucket=BUCKET, Prefix=f"{config.project}/code/")["Contents"]]
    assert any(key.endswith("/preprocess.py") for key in keys)
    assert "mlops-local" not in described["PipelineDefinition"]


def test_an_aws_error_is_one_clear_message(tmp_path, aws_env):
    """moto has no ListPipelineExecutionSteps, which `--wait` polls: its error response
    stands in for any AWS refusal (access denied, throttling) met mid-command."""
    result = run_mlops(tmp_path, "pipeline", "run", "--target", "aws", "--wait", env=aws_env)
    assert result.returncode == 2
    assert "execution started" in result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "ListPipelineExecutionSteps" in line
    assert "Traceback" not in result.stderr


def test_missing_bucket_is_one_clear_message(tmp_path, aws_env):
    result = run_mlops(tmp_path, "pipeline", "run", "--target", "aws",
                       env={**aws_env, "MLOPS_BUCKET": ""})
    assert result.returncode == 2
    assert "MLOPS_BUCKET" in result.stderr and "make deploy-infra" in result.stderr
    assert "Traceback" not in result.stderr
