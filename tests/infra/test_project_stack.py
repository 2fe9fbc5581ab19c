"""The CI/CD project stack (cloudformation/project.yml): its wiring, its rules, its policies,
and model_deploy.stacks deploying it, proven against the Makefile, the buildspecs, a real SageMaker
event shape and moto."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import warnings

import boto3
import botocore.session
import botocore.validate
import pytest
import yaml
from cfnlint.decode.cfn_yaml import load as load_template
from moto import mock_aws
from moto.cloudformation.parsing import get_model_map

from mlops_core import templates
from mlops_core.config import ROOT
from model_deploy import stacks

TEMPLATE = ROOT / "cloudformation" / "project.yml"
REGION, ACCOUNT, PROJECT = "us-east-1", "123456789012", "abalone"
PARAMETERS = {
    "ProjectName": PROJECT,
    "SourceType": "CodeConnections",
    "ConnectionArn": f"arn:aws:codeconnections:{REGION}:{ACCOUNT}:connection/0f6a9c0e-1111",
    "FullRepositoryId": "my-org/mlops-abalone",
    "BranchName": "main",
}
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Actions that have no resource type in IAM, so AWS only accepts them with Resource "*";
# each carries a justification comment in the template.
STAR_RESOURCE_ACTIONS = {
    "cloudwatch:PutMetricData",
    "ecr:GetAuthorizationToken",
    "sagemaker:ListModelPackages",
    "sagemaker:ListPipelines",
    "application-autoscaling:DescribeScalableTargets",
    "application-autoscaling:DescribeScalingPolicies",
    "cloudformation:ValidateTemplate",
}


# ---------------------------------------------------------------- template, resolved
def load() -> dict:
    return json.loads(json.dumps(load_template(str(TEMPLATE))))


@pytest.fixture(scope="module")
def template() -> dict:
    return load()


class Resolver:
    """Evaluates the template's intrinsic functions as CloudFormation would for PARAMETERS in
    ACCOUNT/REGION, with physical names and ARNs of the shape AWS gives each resource type."""

    ARNS = {
        "AWS::S3::Bucket": "arn:aws:s3:::{name}",
        "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
        "AWS::KMS::Key": "arn:aws:kms:{region}:{account}:key/{name}",
        "AWS::CodeBuild::Project": "arn:aws:codebuild:{region}:{account}:project/{name}",
        "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}:*",
        "AWS::SageMaker::ModelPackageGroup":
            "arn:aws:sagemaker:{region}:{account}:model-package-group/{name}",
    }
    NAME_PROPERTIES = ("BucketName", "Name", "LogGroupName", "ModelPackageGroupName")

    def __init__(self, template: dict, parameters: dict[str, str]):
        self.resources = template["Resources"]
        self.values = {
            **{k: str(v.get("Default", "")) for k, v in template["Parameters"].items()},
            **parameters,
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::StackName": f"{PROJECT}-project",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{PROJECT}-project/1",
        }
        self.conditions = {
            name: self.values[spec["Fn::Equals"][0]["Ref"]] == spec["Fn::Equals"][1]
            for name, spec in template["Conditions"].items()
        }

    def ref(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        properties = self.resources[name].get("Properties", {})
        named = [p for p in self.NAME_PROPERTIES if p in properties]
        return self(properties[named[0]]) if named else f"{name}-physical-id"

    def attribute(self, name: str, attribute: str) -> str:
        kind = self.resources[name]["Type"]
        return self.ARNS[kind].format(name=self.ref(name), account=ACCOUNT, region=REGION)

    def sub(self, text: str) -> str:
        def value(match: re.Match) -> str:
            name, _, attribute = match[1].partition(".")
            return self.attribute(name, attribute) if attribute else self.ref(name)

        return re.sub(r"\$\{([^}!]+)\}", value, text)

    def __call__(self, node):
        if isinstance(node, list):
            return [v for v in (self(item) for item in node) if v is not None]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            return None if node["Ref"] == "AWS::NoValue" else self.ref(node["Ref"])
        if set(node) == {"Fn::GetAtt"}:
            return self.attribute(*node["Fn::GetAtt"])
        if set(node) == {"Fn::Sub"}:
            return self.sub(node["Fn::Sub"])
        if set(node) == {"Fn::If"}:
            condition, true, false = node["Fn::If"]
            return self(true if self.conditions[condition] else false)
        if set(node) == {"Fn::Split"}:
            separator, text = node["Fn::Split"]
            return self(text).split(separator)
        if set(node) == {"Fn::Select"}:
            index, items = node["Fn::Select"]
            return self(items)[int(index)]
        return {k: v for k, v in ((k, self(v)) for k, v in node.items()) if v is not None}


@pytest.fixture(scope="module")
def resolved(template) -> dict:
    """The template's resources with every intrinsic function evaluated."""
    resolve = Resolver(template, PARAMETERS)
    return {
        name: resolve(resource)
        for name, resource in template["Resources"].items()
        if resolve.conditions.get(resource.get("Condition"), True)
    }


def statements(resource: dict) -> list[dict]:
    """Every statement of a role's inline policies (or of an AWS::IAM::Policy)."""
    properties = resource["Properties"]
    documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
    if resource["Type"] == "AWS::IAM::Policy":
        documents.append(properties["PolicyDocument"])
    return [s for d in documents for s in d["Statement"]]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def role_statements(resolved: dict, role: str) -> list[dict]:
    """The role's inline statements plus those of AWS::IAM::Policy resources attached to it."""
    attached = [
        r for r in resolved.values()
        if r["Type"] == "AWS::IAM::Policy" and resolved[role]["Properties"].get("RoleName",
                                                                             f"{role}-physical-id")
        in r["Properties"]["Roles"]
    ]
    return statements(resolved[role]) + [s for r in attached for s in statements(r)]


def allows(resolved: dict, role: str, action: str, resource: str) -> bool:
    """Whether an Allow statement of the role matches the action on the resource (IAM wildcard
    matching; conditions are left out, so this is an upper bound of what the role may do)."""
    for statement in role_statements(resolved, role):
        if statement["Effect"] != "Allow":
            continue
        actions, resources = as_list(statement["Action"]), as_list(statement["Resource"])
        if any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            return True
    return False


def arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


# ---------------------------------------------------------------- wiring to Makefile, buildspecs
def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.%/$()-][A-Za-z0-9_.%/$() -]*?)\s*:(?![:=])", line)
        if match and not line.startswith("\t"):
            targets.update(match[1].split())
    return targets


def buildspec(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text())


def buildspec_commands(spec: dict) -> list[str]:
    return [c for phase in spec.get("phases", {}).values() for c in phase.get("commands", [])]


def make_calls(commands: list[str]) -> list[str]:
    """The targets of every `make ...` in the commands (options and VAR=value left out)."""
    calls = []
    for command in commands:
        for part in re.split(r"&&|\|\||;", command):
            words = part.split()
            if words and words[0] == "make":
                calls += [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    return calls


BUILDSPECS = {
    "ModelBuildProject": "buildspec.yml",
    "DeployBuildProject": "model_deploy/buildspec.yml",
    "StagingTestProject": "model_deploy/test-buildspec.yml",
}


def test_codebuild_projects_run_the_project_buildspecs(template):
    specs = {
        name: r["Properties"]["Source"]["BuildSpec"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CodeBuild::Project"
    }
    assert specs == BUILDSPECS


def test_makefile_parser_finds_the_known_targets():
    assert {"install", "lint", "test", "run-aws"} <= make_targets()


@pytest.mark.parametrize("path", sorted(set(BUILDSPECS.values())))
def test_every_make_target_a_buildspec_calls_exists(path):
    calls = make_calls(buildspec_commands(buildspec(path)))
    missing = sorted(set(calls) - make_targets())
    assert not missing, f"{path} calls make targets the Makefile lacks: {missing}"


def test_model_build_buildspec_lints_tests_and_runs_the_pipeline():
    calls = make_calls(buildspec_commands(buildspec("buildspec.yml")))
    assert [c for c in calls if c in {"lint", "test", "run-aws"}] == ["test", "run-aws"]
    rule = re.search(r"^test:(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert rule and "lint" in rule.group(1).split(), "make test must run make lint first"


def test_deploy_buildspec_exports_what_the_pipeline_deploys(template):
    spec = buildspec("model_deploy/buildspec.yml")
    exported = set(spec["artifacts"]["files"])
    stages = {s["Name"]: s for s in
              template["Resources"]["ModelDeployPipeline"]["Properties"]["Stages"]}
    used = set()
    for stage in ("DeployStaging", "DeployProd"):
        for action in stages[stage]["Actions"]:
            config = action["Configuration"]
            used |= {config[k].split("::")[1] for k in ("TemplatePath", "TemplateConfiguration")
                     if k in config}
    assert used == exported == {"template-export.yml", "staging-config.json", "prod-config.json",
                                "batch-template.yml", "batch-config.json"}


def test_batch_stack_follows_the_prod_stack_under_the_cli_stack_name(resolved, project_config):
    actions = {s["Name"]: s["Actions"] for s in
               resolved["ModelDeployPipeline"]["Properties"]["Stages"]}["DeployProd"]
    order = {a["Name"]: a.get("RunOrder", 1) for a in actions}
    assert order["DeployProdStack"] < order["DeployBatchStack"]
    (batch_action,) = [a for a in actions if a["Name"] == "DeployBatchStack"]
    # `mlops batch deploy` (make deploy-batch) updates the same stack.
    assert batch_action["Configuration"]["StackName"] == project_config.batch_pipeline_name


def test_staging_test_buildspec_exists_and_runs_commands():
    assert buildspec_commands(buildspec("model_deploy/test-buildspec.yml"))


# ---------------------------------------------------------------- pipelines
def pipeline_stages(template, name: str) -> list[tuple[str, list[dict]]]:
    return [(s["Name"], s["Actions"]) for s in template["Resources"][name]["Properties"]["Stages"]]


def test_model_build_pipeline_is_v2_and_triggers_on_the_model_paths(resolved):
    pipeline = resolved["ModelBuildPipeline"]["Properties"]
    assert pipeline["PipelineType"] == "V2"
    (trigger,) = pipeline["Triggers"]
    (push,) = trigger["GitConfiguration"]["Push"]
    assert push["Branches"]["Includes"] == ["main"]
    assert set(push["FilePaths"]["Includes"]) == {
        "model_build/**", "mlops.toml", "data/**", "buildspec.yml"}
    source = pipeline["Stages"][0]["Actions"][0]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    assert source["Configuration"]["FullRepositoryId"] == "my-org/mlops-abalone"
    build = pipeline["Stages"][1]["Actions"][0]
    assert build["Configuration"]["ProjectName"] == f"{PROJECT}-model-build"


def test_codecommit_source_has_no_trigger_but_a_push_rule(template):
    resolve = Resolver(template, {**PARAMETERS, "SourceType": "CodeCommit", "ConnectionArn": ""})
    pipeline = resolve(template["Resources"]["ModelBuildPipeline"])["Properties"]
    assert "Triggers" not in pipeline
    source = pipeline["Stages"][0]["Actions"][0]
    assert source["ActionTypeId"]["Provider"] == "CodeCommit"
    assert source["Configuration"]["PollForSourceChanges"] is False
    rule = template["Resources"]["CodeCommitPushRule"]
    assert rule["Condition"] == "UseCodeCommit"
    assert resolve(rule)["Properties"]["Targets"][0]["Arn"] == arn("codepipeline",
                                                                   f"{PROJECT}-model-build")


def test_deploy_pipeline_order_modes_and_stacks(resolved):
    stages = [(s["Name"], s["Actions"])
              for s in resolved["ModelDeployPipeline"]["Properties"]["Stages"]]
    assert [name for name, _ in stages] == [
        "Source", "Build", "DeployStaging", "ApproveProd", "DeployProd"]
    actions = {a["Name"]: a for _, group in stages for a in group}
    staging, prod = actions["DeployStagingStack"], actions["DeployProdStack"]
    assert staging["Configuration"]["ActionMode"] == "REPLACE_ON_FAILURE"
    assert prod["Configuration"]["ActionMode"] == "CREATE_UPDATE"
    assert staging["Configuration"]["StackName"] == f"{PROJECT}-staging"
    assert prod["Configuration"]["StackName"] == f"{PROJECT}-prod"
    assert staging["Configuration"]["TemplateConfiguration"] == "BuildOutput::staging-config.json"
    assert prod["Configuration"]["TemplateConfiguration"] == "BuildOutput::prod-config.json"
    # The staging test runs after the staging deploy, inside the same stage.
    assert (staging["RunOrder"], actions["TestStaging"]["RunOrder"]) == (1, 2)
    assert actions["TestStaging"]["Configuration"]["ProjectName"] == f"{PROJECT}-staging-test"
    assert actions["ApproveProd"]["ActionTypeId"]["Provider"] == "Manual"
    assert actions["StageConfigs"]["OutputArtifacts"] == [{"Name": "BuildOutput"}]


# ---------------------------------------------------------------- EventBridge rules
# The shape of the example in the SageMaker Developer Guide ("Events that Amazon SageMaker
# sends to Amazon EventBridge", Model package state change), with this project's group.
def model_package_event(group: str, status: str, detail_type: str =
                        "SageMaker Model Package State Change") -> dict:
    package = arn("sagemaker", f"model-package/{group}/2")
    return {
        "Source": "aws.sagemaker",
        "DetailType": detail_type,
        "Resources": [package],
        "Detail": json.dumps({
            "ModelPackageGroupName": group,
            "ModelPackageVersion": 2,
            "ModelPackageArn": package,
            "CreationTime": "2021-02-24T17:00:14Z",
            "InferenceSpecification": {
                "Containers": [{
                    "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/"
                             "sagemaker-scikit-learn:1.4-2-cpu-py3",
                    "ModelDataUrl": f"s3://{group}/pipelines/TrainModel/output/model.tar.gz",
                }],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "CertifyForMarketplace": False,
            "ModelApprovalStatus": status,
            "MetadataProperties": {
                "GeneratedBy": arn("sagemaker", f"pipeline/{PROJECT}-train/execution/4r83jejm")},
            "LastModifiedTime": "2021-02-24T17:00:14Z",
        }),
    }


def object_created_event(bucket: str, key: str) -> dict:
    """The shape of S3's "Object Created" event on EventBridge."""
    return {
        "Source": "aws.s3",
        "DetailType": "Object Created",
        "Resources": [f"arn:aws:s3:::{bucket}"],
        "Detail": json.dumps({
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 191000, "etag": "d41d8cd9", "sequencer": "0062E99A"},
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": ACCOUNT,
            "source-ip-address": "198.51.100.7",
            "reason": "PutObject",
        }),
    }


@pytest.fixture(scope="module")
def events(resolved):
    """moto EventBridge with each of the template's rules routed to its own SQS queue."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in DUMMY_AWS_ENV.items():
            env.setenv(key, value)
        with mock_aws():
            client, sqs = boto3.client("events"), boto3.client("sqs")
            queues = {}
            for name in ("ModelApprovedRule", "RawDataRule"):
                pattern = json.dumps(resolved[name]["Properties"]["EventPattern"])
                client.put_rule(Name=name, EventPattern=pattern)
                url = sqs.create_queue(QueueName=name)["QueueUrl"]
                queue_arn = sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                client.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
                queues[name] = url

            def delivered(rule: str, event: dict) -> list[dict]:
                client.put_events(Entries=[event])
                messages = sqs.receive_message(
                    QueueUrl=queues[rule], MaxNumberOfMessages=10).get("Messages", [])
                for message in messages:
                    sqs.delete_message(QueueUrl=queues[rule],
                                       ReceiptHandle=message["ReceiptHandle"])
                return [json.loads(m["Body"]) for m in messages]

            yield client, delivered


def test_approval_of_this_projects_package_reaches_the_deploy_rule(events):
    _, delivered = events
    (event,) = delivered("ModelApprovedRule", model_package_event(f"{PROJECT}-models", "Approved"))
    assert event["detail"]["ModelPackageArn"].endswith(f"model-package/{PROJECT}-models/2")


@pytest.mark.parametrize("group, status, detail_type", [
    (f"{PROJECT}-models", "Rejected", "SageMaker Model Package State Change"),
    (f"{PROJECT}-models", "PendingManualApproval", "SageMaker Model Package State Change"),
    ("other-models", "Approved", "SageMaker Model Package State Change"),
    (f"{PROJECT}-models", "Approved", "SageMaker Model State Change"),
])
def test_other_package_events_do_not_deploy(events, group, status, detail_type):
    _, delivered = events
    assert delivered("ModelApprovedRule", model_package_event(group, status, detail_type)) == []


def test_approval_rule_pattern_with_eventbridge_test_event_pattern(events, resolved):
    client, _ = events
    pattern = json.dumps(resolved["ModelApprovedRule"]["Properties"]["EventPattern"])

    def matches(event: dict) -> bool | None:
        full = {"id": "844e2571-85d4-695f-b930-0153b71dcb42", "version": "0",
                "account": ACCOUNT, "region": REGION, "time": "2021-02-24T17:00:14Z",
                "source": event["Source"], "detail-type": event["DetailType"],
                "resources": event["Resources"], "detail": json.loads(event["Detail"])}
        return client.test_event_pattern(EventPattern=pattern, Event=json.dumps(full)).get("Result")

    approved = matches(model_package_event(f"{PROJECT}-models", "Approved"))
    if approved is None:
        pytest.skip("moto 5.2.5 answers TestEventPattern with an empty response (not "
                    "implemented); the SQS route above proves the same pattern")
    assert approved
    assert not matches(model_package_event(f"{PROJECT}-models", "Rejected"))
    assert not matches(model_package_event("other-models", "Approved"))


def test_new_raw_data_reaches_the_training_rule(events, resolved):
    _, delivered = events
    bucket = resolved["DataBucket"]["Properties"]["BucketName"]
    (event,) = delivered("RawDataRule", object_created_event(bucket, f"{PROJECT}/data/raw/new.csv"))
    assert event["detail"]["object"]["key"] == f"{PROJECT}/data/raw/new.csv"
    assert delivered("RawDataRule", object_created_event(bucket, f"{PROJECT}/data/processed/x"))\
        == []
    assert delivered("RawDataRule", object_created_event("other-bucket",
                                                         f"{PROJECT}/data/raw/new.csv")) == []


def test_rule_targets_and_their_roles(resolved):
    approval = resolved["ModelApprovedRule"]["Properties"]["Targets"][0]
    assert approval["Arn"] == arn("codepipeline", f"{PROJECT}-model-deploy")
    assert approval["RoleArn"].endswith("/ApprovalRuleRole-physical-id")
    raw = resolved["RawDataRule"]["Properties"]["Targets"][0]
    assert raw["Arn"] == arn("sagemaker", f"pipeline/{PROJECT}-train")
    (parameter,) = raw["SageMakerPipelineParameters"]["PipelineParameterList"]
    assert parameter["Name"] == "InputDataUrl"
    assert parameter["Value"] == f"s3://{PROJECT}-data-{ACCOUNT}-{REGION}/{PROJECT}/data/raw/"
    # Each rule's role may start its own target and nothing else.
    for role, action, target in [
        ("ApprovalRuleRole", "codepipeline:StartPipelineExecution", approval["Arn"]),
        ("RawDataRuleRole", "sagemaker:StartPipelineExecution", raw["Arn"]),
    ]:
        (statement,) = role_statements(resolved, role)
        assert (statement["Action"], statement["Resource"]) == (action, target)


# ---------------------------------------------------------------- IAM
def test_no_statement_allows_everything_on_everything(resolved):
    for name, resource in resolved.items():
        if resource["Type"] not in ("AWS::IAM::Role", "AWS::IAM::Policy"):
            continue
        for statement in statements(resource):
            actions = as_list(statement["Action"])
            if statement["Effect"] == "Allow" and "*" in as_list(statement["Resource"]):
                assert not {"*", "*:*"} & set(actions), name
                unjustified = set(actions) - STAR_RESOURCE_ACTIONS
                assert not unjustified, f"{name} allows {unjustified} on every resource"
            assert not any(a.endswith(":*") or a == "*" for a in actions), (name, actions)


def test_star_resources_are_justified_in_the_template():
    lines = TEMPLATE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() == 'Resource: "*"' and "Principal" not in "".join(lines[number - 4:number]):
            window = "\n".join(lines[max(0, number - 8):number])
            assert "Resource must be" in window, f"line {number + 1}: '*' without a reason"


@pytest.mark.parametrize("role, action, resource", [
    ("ModelBuildRole", "sagemaker:ListPipelines", f"pipeline/{PROJECT}-train"),
    ("ModelBuildRole", "sagemaker:CreatePipeline", f"pipeline/{PROJECT}-train"),
    ("ModelBuildRole", "sagemaker:UpdatePipeline", f"pipeline/{PROJECT}-train"),
    ("ModelBuildRole", "sagemaker:DescribePipeline", f"pipeline/{PROJECT}-train"),
    ("ModelBuildRole", "sagemaker:StartPipelineExecution", f"pipeline/{PROJECT}-train"),
    ("ModelBuildRole", "sagemaker:DescribePipelineExecution",
     f"pipeline/{PROJECT}-train/execution/abc123"),
    ("ModelBuildRole", "sagemaker:ListPipelineExecutionSteps",
     f"pipeline/{PROJECT}-train/execution/abc123"),
    ("SageMakerExecutionRole", "sagemaker:CreateProcessingJob",
     "processing-job/pipelines-abc123-Preprocess-x1"),
    ("SageMakerExecutionRole", "sagemaker:CreateTrainingJob",
     "training-job/pipelines-abc123-Train-x1"),
    ("SageMakerExecutionRole", "sagemaker:CreateModelPackage",
     f"model-package-group/{PROJECT}-models"),
    ("DeployBuildRole", "sagemaker:DescribeModelPackage", f"model-package/{PROJECT}-models/3"),
    ("StagingTestRole", "sagemaker:InvokeEndpoint", f"endpoint/{PROJECT}-staging"),
    ("CloudFormationDeployRole", "sagemaker:CreateEndpoint", f"endpoint/{PROJECT}-prod"),
    ("CloudFormationDeployRole", "sagemaker:CreatePipeline", f"pipeline/{PROJECT}-batch"),
])
def test_roles_grant_what_the_pipelines_need(resolved, role, action, resource):
    assert allows(resolved, role, action, arn("sagemaker", resource))


@pytest.mark.parametrize("role, action, resource", [
    ("ModelBuildRole", "sagemaker:CreatePipeline", "pipeline/other-train"),
    ("ModelBuildRole", "sagemaker:DescribePipelineExecution", "pipeline/other-train/execution/a"),
    ("ModelBuildRole", "sagemaker:DeletePipeline", f"pipeline/{PROJECT}-train"),
    ("SageMakerExecutionRole", "sagemaker:CreateModelPackage", "model-package-group/other-models"),
    ("StagingTestRole", "sagemaker:InvokeEndpoint", f"endpoint/{PROJECT}-prod"),
    ("CloudFormationDeployRole", "sagemaker:CreateEndpoint", "endpoint/other-prod"),
    ("CloudFormationDeployRole", "sagemaker:UpdatePipeline", f"pipeline/{PROJECT}-train"),
    ("DeployBuildRole", "sagemaker:UpdateModelPackage", f"model-package/{PROJECT}-models/3"),
])
def test_roles_stop_at_the_projects_resources(resolved, role, action, resource):
    assert not allows(resolved, role, action, arn("sagemaker", resource))


def test_pipeline_roles_start_their_own_builds_and_stacks(resolved):
    project = arn("codebuild", "project/{}")
    assert allows(resolved, "ModelBuildPipelineRole", "codebuild:StartBuild",
                  project.format(f"{PROJECT}-model-build"))
    assert not allows(resolved, "ModelBuildPipelineRole", "codebuild:StartBuild",
                      project.format(f"{PROJECT}-deploy-build"))
    for name in ("deploy-build", "staging-test"):
        assert allows(resolved, "ModelDeployPipelineRole", "codebuild:StartBuild",
                      project.format(f"{PROJECT}-{name}"))
    for stage in ("staging", "prod", "batch"):
        stack = arn("cloudformation", f"stack/{PROJECT}-{stage}/f1e2d3")
        assert allows(resolved, "ModelDeployPipelineRole", "cloudformation:CreateStack", stack)
    assert not allows(resolved, "ModelDeployPipelineRole", "cloudformation:CreateStack",
                      arn("cloudformation", "stack/other-prod/f1e2d3"))
    for role in ("ModelBuildPipelineRole", "ModelDeployPipelineRole"):
        assert allows(resolved, role, "codeconnections:UseConnection",
                      PARAMETERS["ConnectionArn"])


def test_build_roles_reach_only_their_part_of_the_data_bucket(resolved):
    data = f"arn:aws:s3:::{PROJECT}-data-{ACCOUNT}-{REGION}/{PROJECT}"
    # The deploy build uploads the drift check code; the staging test reads held-out data.
    assert allows(resolved, "DeployBuildRole", "s3:PutObject", f"{data}/code/drift-check/a/x.py")
    assert not allows(resolved, "DeployBuildRole", "s3:PutObject", f"{data}/data/raw/x.csv")
    assert allows(resolved, "StagingTestRole", "s3:GetObject", f"{data}/executions/e1/test.csv")
    assert not allows(resolved, "StagingTestRole", "s3:PutObject", f"{data}/executions/e1/t.csv")
    assert allows(resolved, "ModelBuildRole", "s3:PutObject", f"{data}/code/train.py")
    # CloudFormation reads the batch definition the deploy build uploaded, nothing else there.
    definition = f"{data}/code/batch/0a1b/batch-definition.json"
    assert allows(resolved, "DeployBuildRole", "s3:PutObject", definition)
    assert allows(resolved, "CloudFormationDeployRole", "s3:GetObject", definition)
    assert not allows(resolved, "CloudFormationDeployRole", "s3:GetObject",
                      f"{data}/data/raw/x.csv")


def test_deploy_role_manages_the_batch_stacks_roles_only(resolved):
    role = f"arn:aws:iam::{ACCOUNT}:role/{PROJECT}-batch-PipelineRole-a1b2"
    for action in ("iam:CreateRole", "iam:PutRolePolicy", "iam:PassRole"):
        assert allows(resolved, "CloudFormationDeployRole", action, role)
    assert not allows(resolved, "CloudFormationDeployRole", "iam:CreateRole",
                      f"arn:aws:iam::{ACCOUNT}:role/other-batch-PipelineRole-a1b2")
    assert allows(resolved, "CloudFormationDeployRole", "scheduler:CreateSchedule",
                  arn("scheduler", f"schedule/default/{PROJECT}-prod-batch"))


def test_roles_pass_only_the_roles_their_service_needs(resolved):
    execution = resolved["SageMakerExecutionRole"]
    execution_arn = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecutionRole-physical-id"
    deploy_arn = f"arn:aws:iam::{ACCOUNT}:role/CloudFormationDeployRole-physical-id"
    assert execution["Type"] == "AWS::IAM::Role"
    for role in ("ModelBuildRole", "CloudFormationDeployRole", "SageMakerExecutionRole"):
        assert allows(resolved, role, "iam:PassRole", execution_arn)
        assert not allows(resolved, role, "iam:PassRole", deploy_arn)
    assert allows(resolved, "ModelDeployPipelineRole", "iam:PassRole", deploy_arn)
    assert not allows(resolved, "ModelDeployPipelineRole", "iam:PassRole", execution_arn)


def test_each_role_is_assumed_by_one_service(resolved):
    services = {}
    for name, resource in resolved.items():
        if resource["Type"] == "AWS::IAM::Role":
            (statement,) = resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]
            services[name] = statement["Principal"]["Service"]
    assert services["SageMakerExecutionRole"] == "sagemaker.amazonaws.com"
    assert services["CloudFormationDeployRole"] == "cloudformation.amazonaws.com"
    assert {services[r] for r in ("ModelBuildRole", "DeployBuildRole", "StagingTestRole")} == {
        "codebuild.amazonaws.com"}
    codebuild_roles = [r["Properties"]["ServiceRole"] for r in resolved.values()
                       if r["Type"] == "AWS::CodeBuild::Project"]
    assert len(set(codebuild_roles)) == len(codebuild_roles) == 3


# ---------------------------------------------------------------- storage
BUCKETS = ("DataBucket", "ArtifactBucket", "LogBucket")


def test_every_bucket_denies_plain_http(resolved):
    policies = {r["Properties"]["Bucket"]: r["Properties"]["PolicyDocument"]
                for r in resolved.values() if r["Type"] == "AWS::S3::BucketPolicy"}
    for name in BUCKETS:
        bucket = resolved[name]["Properties"]["BucketName"]
        (deny,) = [s for s in policies[bucket]["Statement"] if s["Effect"] == "Deny"]
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert set(deny["Resource"]) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
        assert (deny["Principal"], deny["Action"]) == ("*", "s3:*")


def test_template_fits_in_a_create_stack_call():
    assert len(templates.compact_body(TEMPLATE).encode()) <= stacks.MAX_TEMPLATE_BODY


def moto_copy(source: dict) -> dict:
    """A copy of the template without the types moto 5.2.5's CloudFormation cannot create
    (CodePipeline, CodeBuild, ModelPackageGroup, BucketPolicy); references to them become the
    names and ARNs AWS would give them. The template itself is left as it is."""
    supported, resolve = get_model_map(), Resolver(source, PARAMETERS)
    copied = copy.deepcopy(source)
    dropped = {k for k, r in copied["Resources"].items() if r["Type"] not in supported}

    def substitute(match: re.Match) -> str:
        name, _, attribute = match[1].partition(".")
        if name not in dropped:
            return match[0]
        return resolve.attribute(name, attribute) if attribute else resolve.ref(name)

    def literal(node):
        if isinstance(node, dict):
            if set(node) == {"Ref"} and node["Ref"] in dropped:
                return resolve.ref(node["Ref"])
            if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][0] in dropped:
                return resolve.attribute(*node["Fn::GetAtt"])
            if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
                return {"Fn::Sub": re.sub(r"\$\{([^}!]+)\}", substitute, node["Fn::Sub"])}
            return {key: literal(value) for key, value in node.items()}
        if isinstance(node, list):
            return [literal(value) for value in node]
        return node

    copied["Resources"] = {k: literal(r) for k, r in copied["Resources"].items()
                           if k not in dropped}
    copied["Outputs"] = literal(copied["Outputs"])
    # moto does not evaluate template Rules; CloudFormation does.
    copied.pop("Rules", None)
    # moto keeps a KeyPolicy object as it is and then fails to parse it (CloudFormation takes
    # the object); a resolved JSON string is what moto reads.
    for resource in copied["Resources"].values():
        if resource["Type"] == "AWS::KMS::Key":
            properties = resource["Properties"]
            properties["KeyPolicy"] = json.dumps(resolve(properties["KeyPolicy"]))
    return copied


def s3_api_shape_of_lifecycle(rule: dict) -> dict:
    shaped = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": ""}}
    if "ExpirationInDays" in rule:
        shaped["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        shaped["NoncurrentVersionExpiration"] = rule["NoncurrentVersionExpiration"]
    if "AbortIncompleteMultipartUpload" in rule:
        shaped["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return shaped


def validate_against_s3_api(operation: str, request: dict) -> None:
    """What the template declares, checked against the S3 API's own input shape (botocore's
    service model), since moto's CloudFormation does not apply it and cannot refuse it."""
    model = botocore.session.get_session().get_service_model("s3")
    report = botocore.validate.ParamValidator().validate(
        request, model.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


@pytest.fixture(scope="module")
def moto_stack(template, resolved, tmp_path_factory):
    """The project stack created in moto CloudFormation through model_deploy.stacks.deploy."""
    copy_path = tmp_path_factory.mktemp("template") / "project.json"
    copy_path.write_text(json.dumps(moto_copy(template)))
    printed: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        for key, value in DUMMY_AWS_ENV.items():
            env.setenv(key, value)
        with mock_aws(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # moto warns once per placeholder resource
            clients = {name: boto3.client(name) for name in ("cloudformation", "s3", "kms",
                                                             "iam", "events")}
            outputs = stacks.deploy(f"{PROJECT}-project", PARAMETERS, clients["cloudformation"],
                                   template=copy_path, echo=printed.append)
            yield {**clients, "outputs": outputs, "printed": printed}


def test_deploy_creates_the_stack_and_prints_its_outputs(moto_stack):
    outputs = moto_stack["outputs"]
    assert outputs["DataBucket"] == f"{PROJECT}-data-{ACCOUNT}-{REGION}"
    assert outputs["TrainingPipelineName"] == f"{PROJECT}-train"
    assert outputs["RawDataPrefix"] == f"s3://{PROJECT}-data-{ACCOUNT}-{REGION}/{PROJECT}/data/raw/"
    assert outputs["ExecutionRoleArn"].startswith(f"arn:aws:iam::{ACCOUNT}:role/")
    assert {"ModelPackageGroup", "DeployPipelineName", "BuildPipelineName", "KmsKeyArn",
            "ArtifactBucket", "ProcessedDataPrefix"} <= set(outputs)
    assert moto_stack["printed"][0] == f"{PROJECT}-project: creating"
    assert f"DataBucket = {outputs['DataBucket']}" in moto_stack["printed"]
    assert stacks.stack_outputs(f"{PROJECT}-project", moto_stack["cloudformation"]) == outputs


def test_outputs_name_the_project_resources(resolved, template):
    resolve = Resolver(template, PARAMETERS)
    outputs = {k: resolve(o["Value"]) for k, o in template["Outputs"].items()}
    assert outputs["ModelPackageGroup"] == f"{PROJECT}-models"
    assert outputs["DeployPipelineName"] == f"{PROJECT}-model-deploy"
    assert outputs["BuildPipelineName"] == f"{PROJECT}-model-build"
    assert resolved["ModelPackageGroup"]["Properties"]["ModelPackageGroupName"] == \
        outputs["ModelPackageGroup"]


def test_buckets_are_kms_encrypted(moto_stack):
    """What moto's CloudFormation applies of a bucket (its encryption), read back from S3."""
    s3, key_arn = moto_stack["s3"], moto_stack["outputs"]["KmsKeyArn"]
    for bucket in (moto_stack["outputs"]["DataBucket"], moto_stack["outputs"]["ArtifactBucket"]):
        (rule,) = s3.get_bucket_encryption(Bucket=bucket)[
            "ServerSideEncryptionConfiguration"]["Rules"]
        default = rule["ApplyServerSideEncryptionByDefault"]
        assert (default["SSEAlgorithm"], default["KMSMasterKeyID"]) == ("aws:kms", key_arn)
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    (log_bucket,) = [n for n in names if "-access-logs-" in n]
    log_rule = s3.get_bucket_encryption(Bucket=log_bucket)["ServerSideEncryptionConfiguration"]
    assert log_rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert len(names) == len(BUCKETS) == 3


@pytest.mark.parametrize("name", BUCKETS)
def test_buckets_are_versioned_private_and_expire_old_objects(resolved, name):
    """What moto's CloudFormation does not apply, read from the template and checked against
    the S3 API's shapes: versioning on, every public access blocked, a lifecycle."""
    properties = resolved[name]["Properties"]
    bucket = properties["BucketName"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    block = properties["PublicAccessBlockConfiguration"]
    assert len(block) == 4 and all(value is True for value in block.values())
    rules = properties["LifecycleConfiguration"]["Rules"]
    assert rules and all(rule["Status"] == "Enabled" for rule in rules)
    validate_against_s3_api("PutBucketVersioning", {
        "Bucket": bucket, "VersioningConfiguration": properties["VersioningConfiguration"]})
    validate_against_s3_api("PutPublicAccessBlock", {
        "Bucket": bucket, "PublicAccessBlockConfiguration": block})
    validate_against_s3_api("PutBucketLifecycleConfiguration", {
        "Bucket": bucket,
        "LifecycleConfiguration": {"Rules": [s3_api_shape_of_lifecycle(r) for r in rules]}})


def test_old_artifacts_expire(resolved):
    (rule,) = resolved["ArtifactBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert int(rule["ExpirationInDays"]) == 30  # the ArtifactExpirationDays default
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 7


def test_key_is_customer_managed_and_rotated(moto_stack):
    kms = moto_stack["kms"]
    key = kms.describe_key(KeyId=moto_stack["outputs"]["KmsKeyArn"])["KeyMetadata"]
    assert key["KeyManager"] == "CUSTOMER" and key["Enabled"]
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
    aliases = kms.list_aliases(KeyId=key["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in aliases] == [f"alias/{PROJECT}-mlops"]


def test_roles_and_rules_exist_in_the_account(moto_stack, resolved):
    iam, cfn = moto_stack["iam"], moto_stack["cloudformation"]
    created = cfn.list_stack_resources(StackName=f"{PROJECT}-project")["StackResourceSummaries"]
    roles = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in created
             if r["ResourceType"] == "AWS::IAM::Role"}
    expected = {k for k, r in resolved.items() if r["Type"] == "AWS::IAM::Role"}
    assert set(roles) == expected and len(expected) == 9
    for logical, physical in roles.items():
        policy_names = iam.list_role_policies(RoleName=physical)["PolicyNames"]
        assert policy_names, f"{logical} has no inline policy"
    execution = iam.get_role(RoleName=roles["SageMakerExecutionRole"])["Role"]
    assert execution["Arn"] == moto_stack["outputs"]["ExecutionRoleArn"]
    patterns = {json.loads(r["EventPattern"])["source"][0]
                for r in moto_stack["events"].list_rules()["Rules"]}
    assert patterns == {"aws.sagemaker", "aws.s3"}


def test_deploy_names_what_cloudformation_refuses(moto_stack, tmp_path):
    copy_path = tmp_path / "project.json"
    copy_path.write_text(json.dumps(moto_copy(load())))
    with pytest.raises(stacks.InfraError, match="^other: Missing parameter ConnectionArn"):
        stacks.deploy("other", {"ProjectName": PROJECT}, moto_stack["cloudformation"],
                     template=copy_path, echo=lambda line: None)


def test_destroy_empties_the_buckets_and_deletes_the_stack(moto_stack):
    s3, cfn = moto_stack["s3"], moto_stack["cloudformation"]
    bucket = moto_stack["outputs"]["DataBucket"]
    s3.put_object(Bucket=bucket, Key=f"{PROJECT}/data/raw/abalone.csv",
                  Body=(ROOT / "data" / "abalone.csv").read_bytes())
    s3.put_object(Bucket=bucket, Key=f"{PROJECT}/data/raw/abalone.csv", Body=b"second version")
    printed: list[str] = []
    stacks.destroy(f"{PROJECT}-project", cfn, s3=s3, echo=printed.append)
    assert f"{PROJECT}-project: emptying s3://{bucket}" in printed
    assert s3.list_buckets()["Buckets"] == []
    with pytest.raises(stacks.InfraError, match="does not exist"):
        stacks.stack_outputs(f"{PROJECT}-project", cfn)
    printed.clear()
    stacks.destroy(f"{PROJECT}-project", cfn, s3=s3, echo=printed.append)
    assert printed == [f"{PROJECT}-project: no such stack, nothing to delete"]


# ---------------------------------------------------------------- model_deploy.stacks without AWS
def test_no_credentials_stops_with_a_clear_message(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.write_text("")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookup
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with pytest.raises(stacks.InfraError, match="^no AWS credentials found: run `aws configure`"):
        stacks.deploy(f"{PROJECT}-project", PARAMETERS)
    with pytest.raises(stacks.InfraError, match="^no AWS credentials found"):
        stacks.destroy(f"{PROJECT}-project")


def test_missing_region_stops_with_a_clear_message(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with pytest.raises(stacks.InfraError, match="^no AWS region configured"):
        stacks.stack_outputs(f"{PROJECT}-project")


def test_project_parameters_come_from_mlops_toml(project_config):
    params = stacks.project_parameters(project_config, repository="my-org/mlops-abalone",
                                      connection_arn=PARAMETERS["ConnectionArn"])
    assert params == PARAMETERS
    codecommit = stacks.project_parameters(project_config, repository="mlops-abalone",
                                          source_type="CodeCommit", connection_arn="ignored")
    assert (codecommit["SourceType"], codecommit["ConnectionArn"]) == ("CodeCommit", "")
    with pytest.raises(stacks.InfraError, match="needs the connection's ARN"):
        stacks.project_parameters(project_config, repository="my-org/mlops-abalone")
    with pytest.raises(stacks.InfraError, match="source type 'GitHub'"):
        stacks.project_parameters(project_config, repository="r", source_type="GitHub")


def test_parameter_defaults_match_the_project_naming(template, project_config):
    resolve = Resolver(template, {"ProjectName": project_config.project})
    names = {
        "group": resolve(template["Resources"]["ModelPackageGroup"]["Properties"][
            "ModelPackageGroupName"]),
        "pipeline": resolve(template["Outputs"]["TrainingPipelineName"]["Value"]),
    }
    assert names == {"group": project_config.model_package_group,
                     "pipeline": project_config.pipeline_name}
    assert re.fullmatch(template["Parameters"]["ProjectName"]["AllowedPattern"],
                        project_config.project)


def test_deploy_refuses_a_template_over_the_size_limit(tmp_path):
    big = tmp_path / "big.yml"
    big.write_text(f"Description: {'x' * stacks.MAX_TEMPLATE_BODY}\n")
    with pytest.raises(stacks.InfraError, match="over 51200 bytes as compact JSON"):
        stacks.deploy("s", {}, client=object(), template=big)
