"""cloudformation/endpoint.yml: lint-clean, and both stage configs deploy into moto.

moto's CloudFormation builds SageMaker Model/EndpointConfig/Endpoint, KMS, IAM, Events and
dashboards, and leaves other types (alarms, autoscaling, Model Monitor, pipelines, schedules)
as placeholders. The test deploys a copy of the template in which a `Fn::GetAtt` of a
placeholder becomes a literal; the template itself stays as AWS deploys it. Autoscaling is
checked by registering the template's ScalableTarget and ScalingPolicy properties, resolved
with the stack's parameters, through the application-autoscaling API.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode.cfn_yaml import load as load_template
from moto import mock_aws
from moto.cloudformation.parsing import get_model_map

from mlops_core import service_model
from model_deploy import build
from model_deploy.monitoring import history, model_quality
from tests.helpers import NAMES, REGION, register, set_status

TEMPLATE = build.TEMPLATE
# moto warns once for each resource it leaves as a placeholder.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")


def test_template_is_lint_clean():
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=[REGION]))
    assert [str(m) for m in matches] == []


def test_no_account_id_or_region_is_hard_coded():
    text = TEMPLATE.read_text()
    assert re.findall(r"\b\d{12}\b", text) == []
    assert re.findall(r"\b(?:us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-\d\b", text) == []


def test_rollback_alarms_are_the_templates_own():
    template = load_template(str(TEMPLATE))
    resources = template["Resources"]
    deployment = resources["Endpoint"]["Properties"]["DeploymentConfig"]
    alarms = [a["AlarmName"]["Ref"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]]
    metrics = {resources[name]["Properties"]["MetricName"] for name in alarms}
    assert {resources[name]["Type"] for name in alarms} == {"AWS::CloudWatch::Alarm"}
    assert metrics == {"Invocation5XXErrors", "ModelLatency"}


def moto_copy() -> tuple[dict, set[str]]:
    """The template with every Fn::GetAtt of a type moto cannot create made a literal."""
    template = json.loads(json.dumps(load_template(str(TEMPLATE))))
    supported = get_model_map()
    placeholders = {k for k, r in template["Resources"].items() if r["Type"] not in supported}

    def literal(node):
        if isinstance(node, dict):
            if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][0] in placeholders:
                return "placeholder-" + ".".join(node["Fn::GetAtt"])
            return {key: literal(value) for key, value in node.items()}
        if isinstance(node, list):
            return [literal(value) for value in node]
        return node

    return literal(template), placeholders


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """moto clients, and the stage configs that build.py writes for an approved package."""
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.setenv(key, "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        with mock_aws():
            clients = {name: boto3.client(name, region_name=REGION) for name in
                       ("sagemaker", "cloudformation", "application-autoscaling", "kms",
                        "events", "iam")}
            arns = register(clients["sagemaker"], "abalone-models", 2)
            set_status(clients["sagemaker"], arns[1], "Approved")
            out = tmp_path_factory.mktemp("deploy-build")
            build.build(clients["sagemaker"], "abalone-models", NAMES, out)
            clients["configs"] = {
                stage: json.loads((out / f"{stage}-config.json").read_text())
                for stage in build.STAGES
            }
            yield clients


def deploy(aws, stack: str, parameters: dict[str, str], tags: dict[str, str]) -> dict:
    template, _ = moto_copy()
    cfn = aws["cloudformation"]
    cfn.create_stack(
        StackName=stack, TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    description = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    assert description["StackStatus"] == "CREATE_COMPLETE"
    resources = cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
    return {
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in description["Outputs"]},
        "resources": {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources
                      if r["LogicalResourceId"]},
    }


def resolve(node, parameters: dict[str, str], attributes: dict[str, str]):
    """Ref, Fn::Sub and Fn::GetAtt as CloudFormation would resolve them for this stack."""
    if isinstance(node, dict):
        if "Ref" in node:
            return parameters.get(node["Ref"]) or attributes[node["Ref"]]
        if "Fn::GetAtt" in node:
            return attributes[".".join(node["Fn::GetAtt"])]
        if "Fn::Sub" in node:
            return re.sub(r"\$\{([^}]+)\}",
                          lambda m: parameters.get(m[1]) or attributes[m[1]], node["Fn::Sub"])
        return {key: resolve(value, parameters, attributes) for key, value in node.items()}
    return node


def register_autoscaling(aws, parameters: dict[str, str], endpoint: str) -> str:
    """Create the template's ScalableTarget and ScalingPolicy, as CloudFormation would."""
    resources = load_template(str(TEMPLATE))["Resources"]
    attributes = {"Endpoint.EndpointName": endpoint}
    target = resolve(resources["ScalableTarget"]["Properties"], parameters, attributes)
    scaling = aws["application-autoscaling"]
    scaling.register_scalable_target(
        ServiceNamespace=target["ServiceNamespace"], ResourceId=target["ResourceId"],
        ScalableDimension=target["ScalableDimension"],
        MinCapacity=int(target["MinCapacity"]), MaxCapacity=int(target["MaxCapacity"]))
    attributes["ScalableTarget"] = target["ResourceId"]
    policy = resolve(resources["ScalingPolicy"]["Properties"], parameters, attributes)
    assert policy["ScalingTargetId"] == target["ResourceId"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    scaling.put_scaling_policy(
        PolicyName=policy["PolicyName"], PolicyType=policy["PolicyType"],
        ServiceNamespace=target["ServiceNamespace"], ResourceId=target["ResourceId"],
        ScalableDimension=target["ScalableDimension"],
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(tracking["TargetValue"]),
            "ScaleInCooldown": int(tracking["ScaleInCooldown"]),
            "ScaleOutCooldown": int(tracking["ScaleOutCooldown"]),
            "PredefinedMetricSpecification": tracking["PredefinedMetricSpecification"],
        })
    return target["ResourceId"]


@pytest.mark.parametrize("stage", build.STAGES)
def test_stage_config_deploys_endpoint_with_capture_and_autoscaling(aws, stage):
    config = aws["configs"][stage]
    params = config["Parameters"]
    stack = deploy(aws, f"abalone-{stage}-endpoint", params, config["Tags"])

    sagemaker = aws["sagemaker"]
    endpoint = sagemaker.describe_endpoint(EndpointName=stack["outputs"]["EndpointName"])
    assert endpoint["EndpointStatus"] == "InService"
    endpoint_config = sagemaker.describe_endpoint_config(
        EndpointConfigName=endpoint["EndpointConfigName"])
    (variant,) = endpoint_config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["InitialInstanceCount"] == int(params["InitialInstanceCount"])
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelPackageName"] == params["ModelPackageArn"]

    capture = endpoint_config["DataCaptureConfig"]
    expected_uri = f"s3://mlops-test/abalone/datacapture/{stage}/v2"
    assert capture["EnableCapture"] is True
    assert capture["DestinationS3Uri"] == expected_uri == stack["outputs"]["DataCaptureUri"]
    assert capture["InitialSamplingPercentage"] == int(params["SamplingPercentage"])
    assert sorted(o["CaptureMode"] for o in capture["CaptureOptions"]) == ["Input", "Output"]
    assert capture["CaptureContentTypeHeader"] == {
        "CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]}
    # list_keys, not describe_key: moto's describe_key fails on a key made by CloudFormation.
    keys = {k["KeyId"]: k["KeyArn"] for k in aws["kms"].list_keys()["Keys"]}
    assert capture["KmsKeyId"] == keys[stack["resources"]["CaptureKey"]]

    resource_id = register_autoscaling(aws, params, endpoint["EndpointName"])
    scaling = aws["application-autoscaling"]
    (target,) = scaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource_id])["ScalableTargets"]
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        int(params["MinCapacity"]), int(params["MaxCapacity"]))
    (policy,) = scaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource_id)["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance")
    assert tracking["TargetValue"] == float(params["TargetInvocationsPerInstance"])

    retrain = params["EnableRetrainOnDrift"] == "true"
    assert ("RetrainOnDriftRule" in stack["resources"]) is retrain
    if retrain:
        rule = stack["resources"]["RetrainOnDriftRule"]
        (target,) = aws["events"].list_targets_by_rule(Rule=rule)["Targets"]
        assert target["Arn"].endswith(f":pipeline/{params['RetrainPipelineName']}")


def test_optional_parts_follow_the_parameters(aws):
    params = {**aws["configs"]["staging"]["Parameters"], "MonitoringMode": "ModelMonitor",
              "DriftAlarmFeature": "shell_weight", "KmsKeyArn": "",
              "EnableRetrainOnDrift": "true"}
    monitor = deploy(aws, "abalone-monitor-mode", params, {})
    params.update(MonitoringMode="None", KmsKeyArn=aws["kms"].create_key()["KeyMetadata"]["Arn"])
    off = deploy(aws, "abalone-no-monitoring", params, {})

    assert "SchedulerRole" not in monitor["resources"]  # the Pipeline mode's scheduler
    assert "RetrainOnDriftRule" in monitor["resources"]
    assert "RetrainOnDriftRule" not in off["resources"]  # nothing to react to
    assert "CaptureKey" not in off["resources"]
    endpoint = aws["sagemaker"].describe_endpoint(EndpointName=off["outputs"]["EndpointName"])
    capture = aws["sagemaker"].describe_endpoint_config(
        EndpointConfigName=endpoint["EndpointConfigName"])["DataCaptureConfig"]
    assert capture["KmsKeyId"] == params["KmsKeyArn"]


def defaults(template: dict) -> dict[str, str]:
    return {name: str(spec["Default"]) for name, spec in template["Parameters"].items()
            if "Default" in spec}


def pipeline_definition(params: dict[str, str]) -> dict:
    """The drift check pipeline's definition, as the stage's parameters fill it in."""
    template = load_template(str(TEMPLATE))
    body, variables = template["Resources"]["DriftCheckPipeline"]["Properties"][
        "PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"]
    named = {k: v for k, v in variables.items() if k != "KeyArn"}  # KeyArn: a Fn::If
    values = {**defaults(template), **params, "AWS::Region": REGION, "KeyArn": "key-arn",
              **resolve(named, params, {"Endpoint.EndpointName": "abalone-staging"})}
    return json.loads(re.sub(r"\$\{([^}]+)\}", lambda m: values[m[1]], body))


def test_pipeline_mode_runs_drift_check_with_the_baselines(aws):
    """The drift check pipeline's definition, as the staging config fills it in."""
    params = aws["configs"]["staging"]["Parameters"]
    assert params["MonitoringMode"] == "Pipeline"
    steps = {step["Name"]: step for step in pipeline_definition(params)["Steps"]}
    assert set(steps) == {"DriftCheck", "ModelQuality"}
    step = steps["DriftCheck"]
    arguments = step["Arguments"]["AppSpecification"]["ContainerArguments"]
    options = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert options["--capture-uri"] == "s3://mlops-test/abalone/datacapture/staging/v2"
    assert options["--model-version"] == params["ModelVersion"]
    inputs = {i["InputName"]: i["S3Input"] for i in step["Arguments"]["ProcessingInputs"]}
    assert inputs["statistics"]["S3Uri"] == params["BaselineStatisticsUri"]
    assert inputs["constraints"]["S3Uri"] == params["BaselineConstraintsUri"]
    assert inputs["code"]["S3Uri"] == params["DriftCheckCodeUri"]
    for option, name in (("--baseline-statistics", "statistics"),
                         ("--baseline-constraints", "constraints")):
        local = Path(options[option])
        assert local.parent == Path(inputs[name]["LocalPath"])
        assert local.name == Path(inputs[name]["S3Uri"]).name
    assert Path(step["Arguments"]["AppSpecification"]["ContainerEntrypoint"][-1]).parent == (
        Path(inputs["code"]["LocalPath"]))


def test_pipeline_mode_checks_model_quality_and_alarms_on_it(aws):
    """The model quality step reads the stage's capture and ground truth, takes the test
    metrics of the served package, and emits the metric the alarm (and retraining) watch."""
    params = aws["configs"]["staging"]["Parameters"]
    resources = load_template(str(TEMPLATE))["Resources"]
    step = next(s for s in pipeline_definition(params)["Steps"] if s["Name"] == "ModelQuality")
    app = step["Arguments"]["AppSpecification"]
    options = dict(zip(app["ContainerArguments"][::2], app["ContainerArguments"][1::2],
                       strict=True))
    assert options["--capture-uri"] == "s3://mlops-test/abalone/datacapture/staging/v2"
    assert options["--ground-truth-uri"] == "s3://mlops-test/abalone/ground-truth/staging"
    assert options["--model-package-arn"] == params["ModelPackageArn"]
    assert options["--rmse-tolerance"] == "1.2"
    (code,) = step["Arguments"]["ProcessingInputs"]
    assert code["S3Input"]["S3Uri"] == params["DriftCheckCodeUri"]
    script = Path(app["ContainerEntrypoint"][-1])
    assert script.parent == Path(code["S3Input"]["LocalPath"])
    assert (build.MONITOR_CODE / script.name).is_file()  # what the deploy build uploads
    alarm = resources["ModelQualityAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (options["--metric-namespace"],
                                                         model_quality.VIOLATIONS_METRIC)
    pattern = resources["RetrainOnDriftRule"]["Properties"]["EventPattern"]
    assert {"Fn::GetAtt": ["ModelQualityAlarm", "Arn"]} in pattern["resources"]["Fn::If"][1]


def test_pipeline_mode_runs_keep_their_own_outputs_and_read_the_earlier_ones(aws):
    """Each execution writes under its own prefix, in the local runs' layout (data quality
    at <prefix>/<run>/, model quality at <prefix>/model-quality/<run>/), and the drift check
    reads the earlier runs from <prefix>: so a scheduled run replaces none and has a history."""
    params = aws["configs"]["staging"]["Parameters"]
    definition = pipeline_definition(params)
    assert service_model.definition_problems(definition) == []  # CreateProcessingJob's shapes
    steps = {step["Name"]: step for step in definition["Steps"]}
    prefix = "s3://mlops-test/abalone/monitoring/staging/v2"
    run = {"Get": "Execution.PipelineExecutionId"}
    for name, under in (("DriftCheck", prefix),
                        ("ModelQuality", f"{prefix}/{history.MODEL_QUALITY_FOLDER}")):
        (output,) = steps[name]["Arguments"]["ProcessingOutputConfig"]["Outputs"]
        assert output["S3Output"]["S3Uri"] == {"Std:Join": {"On": "/", "Values": [under, run]}}
    arguments = steps["DriftCheck"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert dict(zip(arguments[::2], arguments[1::2], strict=True))["--history-uri"] == prefix
