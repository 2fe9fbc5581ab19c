"""The sagemaker SDK classes the pipeline factories use, changed by subclassing for offline builds.

Import this only inside `model_build.sdk.offline` (the SDK creates clients at import, and
needs the region set first); `model_build.sdk.check_sdk` names what these classes override.
"""

from __future__ import annotations

from pathlib import Path

import boto3
from sagemaker.core.workflow.pipeline_context import PipelineSession
from sagemaker.serve.model_builder import ModelBuilder
from sagemaker.train import ModelTrainer

from mlops_core.files import content_hash, named_files
from mlops_core.targets import Target

# Telemetry off: the SDK would otherwise call home while building.
SDK_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


class ContentAddressedSession(PipelineSession):
    """A PipelineSession whose uploads land under `<prefix>/<content hash>/` in the target's store.

    The SDK uploads training code and its own driver scripts under a timestamped key while
    building; addressing them by content keeps the definition byte-identical between builds
    and puts the files in the active target's store (S3 or the local store).
    """

    def __init__(self, *, target: Target, prefix: str):
        super().__init__(
            boto_session=boto3.Session(region_name=target.region, **target.boto_credentials),
            default_bucket=target.bucket,
            sagemaker_config=SDK_CONFIG,
        )
        self._bucket = target.bucket
        self._prefix = prefix
        self._upload = target.upload

    def upload_data(self, path, bucket=None, key_prefix="data", callback=None, extra_args=None):
        path = Path(path)
        base = f"s3://{bucket or self.default_bucket()}/{self._prefix}/{content_hash(path)}"
        for name, file in named_files(path):
            self._upload(file, f"{base}/{name}")
        return base if path.is_dir() else f"{base}/{path.name}"

    def default_bucket(self):
        return self._bucket


class OfflineModelTrainer(ModelTrainer):
    """A ModelTrainer that does not ask IAM whether the role can write the default bucket.

    The SDK simulates the role's policy (a network call) to pick where to stage code; the
    session's content-addressed uploader decides that instead.
    """

    def _resolve_staging_bucket(self) -> tuple[str, None]:
        return self.sagemaker_session.default_bucket(), None


class PackageModelBuilder(ModelBuilder):
    """Builds a CreateModel request whose one container is a registered model package.

    The package carries its image, model data and environment, so the container is only
    `ModelPackageName`; the SDK sends such a container as `Containers`, as CreateModel wants.
    """

    def __init__(self, model_package_arn, **kwargs):
        super().__init__(**kwargs)
        self.model_package_arn = model_package_arn

    def _prepare_container_def(self):
        return {"ModelPackageName": self.model_package_arn}
