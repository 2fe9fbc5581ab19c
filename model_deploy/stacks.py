"""Deploy and destroy the project stack (`cloudformation/project.yml`) with your AWS credentials.

boto3 clients are made inside the functions, from the default credential chain, unless a client
is passed in (tests pass moto clients).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
from botocore.exceptions import ClientError, WaiterError

from mlops_core import templates
from mlops_core.config import ROOT, Config

TEMPLATE = ROOT / "cloudformation" / "project.yml"
# CloudFormation refuses a TemplateBody larger than this, even as compact JSON; bigger
# templates need an S3 URL.
MAX_TEMPLATE_BODY = 51_200
SOURCE_TYPES = ("CodeConnections", "CodeCommit")
WAIT = {"Delay": 10, "MaxAttempts": 360}


class InfraError(ValueError):
    """Deploying or destroying the project stack failed; the message says why."""


def require_credentials(session: boto3.session.Session | None = None) -> boto3.session.Session:
    """The session to use, or a clear error when no credentials or region are configured."""
    session = session or boto3.session.Session()
    if session.get_credentials() is None:
        raise InfraError(
            "no AWS credentials found: run `aws configure` (or `aws sso login --profile NAME` "
            "and set AWS_PROFILE), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if not session.region_name:
        raise InfraError(
            "no AWS region configured: set AWS_DEFAULT_REGION (e.g. us-east-1) "
            "or `region` in ~/.aws/config"
        )
    return session


def _client(service: str, client=None):
    return client if client is not None else require_credentials().client(service)


def project_parameters(
    config: Config,
    *,
    repository: str,
    connection_arn: str = "",
    branch: str = "main",
    source_type: str = "CodeConnections",
) -> dict[str, str]:
    """Stack parameters for this project: ProjectName comes from `[project] name`."""
    if source_type not in SOURCE_TYPES:
        raise InfraError(f"source type {source_type!r} is not one of {SOURCE_TYPES}")
    if source_type == "CodeConnections" and not connection_arn:
        raise InfraError(
            "a CodeConnections source needs the connection's ARN (create it in the console "
            "under Developer Tools > Settings > Connections and complete the handshake)"
        )
    return {
        "ProjectName": config.project,
        "SourceType": source_type,
        "ConnectionArn": connection_arn if source_type == "CodeConnections" else "",
        "FullRepositoryId": repository,
        "BranchName": branch,
    }


def deploy(
    stack_name: str,
    params: dict[str, str],
    client=None,
    *,
    template: Path = TEMPLATE,
    echo: Callable[[str], None] = print,
) -> dict[str, str]:
    """Create or update the stack, wait for it, print and return its outputs."""
    cfn = _client("cloudformation", client)
    body = templates.compact_body(template)
    if len(body.encode()) > MAX_TEMPLATE_BODY:
        raise InfraError(f"{template} is over {MAX_TEMPLATE_BODY} bytes as compact JSON, "
                         "CloudFormation's TemplateBody limit")
    request = {
        "StackName": stack_name,
        "TemplateBody": body,
        "Parameters": [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in params.items()],
        "Capabilities": ["CAPABILITY_IAM"],
    }
    status = _status(cfn, stack_name)
    if status == "ROLLBACK_COMPLETE":
        # A first creation that failed leaves an empty stack that can only be deleted.
        echo(f"{stack_name}: deleting the stack left by a failed creation")
        _delete_and_wait(cfn, stack_name)
        status = None
    try:
        if status is None:
            echo(f"{stack_name}: creating")
            cfn.create_stack(**request)
            _wait(cfn, "stack_create_complete", stack_name)
        else:
            echo(f"{stack_name}: updating")
            cfn.update_stack(**request)
            _wait(cfn, "stack_update_complete", stack_name)
    except ClientError as err:
        message = err.response["Error"]["Message"]
        if "No updates are to be performed" not in message:
            raise InfraError(f"{stack_name}: {message}") from None
        echo(f"{stack_name}: already up to date")
    outputs = stack_outputs(stack_name, cfn)
    for key, value in outputs.items():
        echo(f"{key} = {value}")
    return outputs


def stack_outputs(stack_name: str, client=None) -> dict[str, str]:
    """The stack's outputs as a dict (what the Makefile and CLI read)."""
    cfn = _client("cloudformation", client)
    try:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as err:
        raise InfraError(f"{stack_name}: {err.response['Error']['Message']}") from None
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def destroy(
    stack_name: str,
    client=None,
    *,
    s3=None,
    empty_buckets: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    """Delete the stack. Its buckets are emptied first (every version), or deletion would fail."""
    cfn = _client("cloudformation", client)
    if _status(cfn, stack_name) is None:
        echo(f"{stack_name}: no such stack, nothing to delete")
        return
    if empty_buckets:
        s3 = _client("s3", s3)
        for bucket in _stack_buckets(cfn, stack_name):
            echo(f"{stack_name}: emptying s3://{bucket}")
            _empty_bucket(s3, bucket)
    echo(f"{stack_name}: deleting")
    _delete_and_wait(cfn, stack_name)
    echo(f"{stack_name}: deleted")


def _status(cfn, stack_name: str) -> str | None:
    """The stack's status, or None when there is no live stack of that name."""
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as err:
        if "does not exist" in err.response["Error"]["Message"]:
            return None
        raise InfraError(f"{stack_name}: {err.response['Error']['Message']}") from None
    status = stacks[0]["StackStatus"] if stacks else None
    return None if status == "DELETE_COMPLETE" else status


def _wait(cfn, waiter: str, stack_name: str) -> None:
    try:
        cfn.get_waiter(waiter).wait(StackName=stack_name, WaiterConfig=WAIT)
    except WaiterError:
        raise InfraError(f"{stack_name}: {_failure(cfn, stack_name)}") from None


def _delete_and_wait(cfn, stack_name: str) -> None:
    cfn.delete_stack(StackName=stack_name)
    _wait(cfn, "stack_delete_complete", stack_name)


def _failure(cfn, stack_name: str) -> str:
    """The stack's status and the reasons of its failed resources, newest first."""
    status = _status(cfn, stack_name) or "DELETE_COMPLETE"
    events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
    reasons = [
        f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', e['ResourceStatus'])}"
        for e in events
        if e["ResourceStatus"].endswith("_FAILED")
    ]
    return f"{status}; " + ("; ".join(reasons[:5]) if reasons else "no failed resource reported")


def _stack_buckets(cfn, stack_name: str) -> list[str]:
    pages = cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name)
    return [
        r["PhysicalResourceId"]
        for page in pages
        for r in page["StackResourceSummaries"]
        if r["ResourceType"] == "AWS::S3::Bucket" and r.get("PhysicalResourceId")
    ]


def _empty_bucket(s3, bucket: str) -> None:
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            objects = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            # A page holds at most 1,000 keys, the most delete_objects takes at once.
            if objects:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    except ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchBucket":
            raise InfraError(f"could not empty s3://{bucket}: {err}") from None
