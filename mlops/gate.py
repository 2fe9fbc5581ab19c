"""`mlops endpoint test STAGE`: the staging gate against the deployed package's own test rows.

The package that a stage serves names its held-out test split (CustomerMetadataProperties
TestDataUri) and its evaluation; the gate scores the endpoint on those rows and bounds its
RMSE by the evaluation's. Locally a pass is recorded, and `mlops deploy prod` requires it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlops import deploy
from mlops.config import Config
from mlops.endpoint import process
from mlops.registry import LocalRegistry
from model_deploy import endpoint_test


class GateSetupError(ValueError):
    """The gate cannot find what to test."""


def _aws_package_arn(stage: str) -> str:
    # In the deploy pipeline's test action the build output is a secondary input artifact.
    folder = Path(os.environ.get("CODEBUILD_SRC_DIR_BuildOutput", deploy.BUILD_DIR))
    path = folder / f"{stage}-config.json"
    if not path.is_file():
        raise GateSetupError(f"{path} not found: the deploy build step writes it")
    return json.loads(path.read_text())["Parameters"]["ModelPackageArn"]


def run(config: Config, stage: str, target: str = "local", rows: int = 1000):
    """Run every check of the gate; returns (package, GateResult)."""
    if target == "aws":
        import boto3

        client, s3 = boto3.client("sagemaker"), boto3.client("s3")
        arn = _aws_package_arn(stage)
        transport = endpoint_test.SageMakerTransport(
            boto3.client("sagemaker-runtime"), config.endpoint_name(stage))
    else:
        client, s3 = LocalRegistry(), None
        endpoint = process.status(stage)
        arn = endpoint["model_info"]["ModelPackageArn"]
        transport = endpoint_test.HttpTransport(endpoint["url"])
    package = client.describe_model_package(ModelPackageName=arn)
    try:
        test_uri = package["CustomerMetadataProperties"]["TestDataUri"]
        evaluation_uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    except KeyError as missing:
        raise GateSetupError(f"model package {arn} does not name its {missing}") from None
    data = endpoint_test.parse_test_csv(
        endpoint_test.read_source(test_uri, s3).decode("utf-8"), rows)
    reference = endpoint_test.evaluation_rmse(
        json.loads(endpoint_test.read_source(evaluation_uri, s3)))
    result = endpoint_test.run_checks(transport, data, endpoint_test.rmse_bound(None, reference))
    if result.passed and target == "local":
        deploy.record_gate(stage, package, result.as_dict()["checks"])
    return package, result
