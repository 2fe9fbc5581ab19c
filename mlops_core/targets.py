"""Where a run goes: the `local` target (this machine) or `aws` (the caller's account).

A target names the region, bucket and role, and says how to upload a file to its store.
Nothing here creates an AWS client until an `aws` target is asked for; the local target is
given its store (anything with `put_file` and `exists`, such as `mlops_local.store.LocalStore`).
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

    def raw_data_uri(self, config: Config) -> str:
        return f"s3://{self.bucket}/{config.project}/data/raw/{config.data_file.name}"


def local(config: Config, store) -> Target:
    settings = config.local
    return Target(
        name="local",
        region=settings.get("region", "us-east-1"),
        bucket=settings.get("bucket", "mlops-local"),
        role=settings.get("role_arn", "arn:aws:iam::000000000000:role/mlops-local"),
        upload=lambda path, uri: store.put_file(path, uri),
        exists=store.exists,
        boto_credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"},
    )


def aws(config: Config, s3_client=None) -> Target:
    """The caller's account; bucket and role from the environment or `[aws]` in mlops.toml."""
    settings = config.aws
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or settings.get(
        "region"
    )
    bucket = os.environ.get("MLOPS_BUCKET") or settings.get("bucket")
    role = os.environ.get("MLOPS_ROLE_ARN") or settings.get("role_arn")
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
