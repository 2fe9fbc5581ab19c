"""Where a run goes: the `local` target (this machine) or `aws` (the caller's account).

A target names the region, bucket and role, and says how to upload a file to its store.
Nothing here creates an AWS client until an `aws` target is asked for; the local target is
given its store (anything with `put_file` and `exists`, such as `mlops_local.store.LocalStore`).

A target also has a profile: whose definition it builds (whether it tunes, `[tuning]`). It is
the target's own unless the target rehearses another's: `local(config, store, profile="aws")`
builds what CodeBuild builds, with this machine's names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlops_core.config import Config


class TargetError(ValueError):
    """A target that cannot be used as configured; the message says what is missing."""


@dataclass(frozen=True)
class Target:
    name: str
    region: str
    bucket: str
    role: str
    upload: Callable[[Path, str], str]  # (local file, s3 uri) -> s3 uri
    exists: Callable[[str], bool]
    boto_credentials: dict  # passed to boto3.Session; dummy ones for local builds
    rehearses: str = ""  # the target whose definition this one builds, when not its own

    @property
    def profile(self) -> str:
        """Whose definition this target builds: the step structure, not the names."""
        return self.rehearses or self.name

    def raw_data_uri(self, config: Config) -> str:
        return f"s3://{self.bucket}/{config.project}/data/raw/{config.data_file.name}"


@dataclass(frozen=True)
class AwsName:
    """One name of the aws target, and where it was found (or where CodeBuild gets it)."""

    value: str  # empty when not configured
    source: str


# name -> (environment variables, [aws] key, what sets it in CodeBuild)
_AWS_NAMES = {
    "region": (("AWS_REGION", "AWS_DEFAULT_REGION"), "region", "the build's own region"),
    "bucket": (("MLOPS_BUCKET",), "bucket", "the project stack's DataBucket output"),
    "role": (("MLOPS_ROLE_ARN",), "role_arn", "the project stack's ExecutionRoleArn output"),
}
NOT_CONFIGURED = "<not configured>"
# What an offline aws build puts where a name is not configured (diffs only: it runs nowhere).
PLACEHOLDERS = {"region": "us-west-2", "bucket": "aws-bucket-not-configured",
                "role": "arn:aws:iam::111111111111:role/aws-role-not-configured"}


def aws_names(config: Config) -> dict[str, AwsName]:
    """The aws target's region, bucket and role: the environment first, then `[aws]`."""
    names = {}
    for name, (variables, key, codebuild) in _AWS_NAMES.items():
        found = [(v, os.environ[v]) for v in variables if os.environ.get(v)]
        if found:
            names[name] = AwsName(found[0][1], found[0][0])
        elif config.aws.get(key):
            names[name] = AwsName(config.aws[key], f"[aws] {key}")
        else:
            names[name] = AwsName("", f"in CodeBuild {variables[0]} is {codebuild}")
    return names


def local(config: Config, store, profile: str = "") -> Target:
    """This machine; `profile` = "aws" rehearses the aws target's definition here."""
    settings = config.local
    return Target(
        name="local",
        region=settings.get("region", "us-east-1"),
        bucket=settings.get("bucket", "mlops-local"),
        role=settings.get("role_arn", "arn:aws:iam::000000000000:role/mlops-local"),
        upload=lambda path, uri: store.put_file(path, uri),
        exists=store.exists,
        boto_credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"},
        rehearses="" if profile in ("", "local") else profile,
    )


def aws_offline(config: Config, store) -> Target:
    """The aws target's names (placeholders where none is configured) on a local `store`
    standing in for its bucket: builds its definition to compare, with no credentials."""
    names = {name: found.value or PLACEHOLDERS[name] for name, found in aws_names(config).items()}
    return Target("aws", names["region"], names["bucket"], names["role"],
                  upload=lambda path, uri: store.put_file(path, uri), exists=store.exists,
                  boto_credentials={"aws_access_key_id": "offline",
                                    "aws_secret_access_key": "offline"})


def aws(config: Config, s3_client=None) -> Target:
    """The caller's account; bucket and role from the environment or `[aws]` in mlops.toml."""
    names = aws_names(config)
    region, bucket, role = (names[name].value for name in ("region", "bucket", "role"))
    missing = [
        name
        for name, value in (
            ("region (AWS_REGION or [aws] region)", region),
            ("bucket (MLOPS_BUCKET or [aws] bucket)", bucket),
            ("execution role (MLOPS_ROLE_ARN or [aws] role_arn)", role),
        )
        if not value
    ]
    if missing:
        raise TargetError(
            "the aws target needs " + ", ".join(missing)
            + "; deploy the project stack (make deploy-infra) and export its outputs"
        )
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3", region_name=region)

    def split(uri: str) -> tuple[str, str]:
        bucket_name, _, key = uri.removeprefix("s3://").partition("/")
        return bucket_name, key

    def upload(path: Path, uri: str) -> str:
        s3_client.upload_file(str(path), *split(uri))
        return uri

    def exists(uri: str) -> bool:
        bucket_name, key = split(uri)
        return s3_client.list_objects_v2(Bucket=bucket_name, Prefix=key, MaxKeys=1).get(
            "KeyCount", 0
        ) > 0

    return Target("aws", region, bucket, role, upload, exists, {})
