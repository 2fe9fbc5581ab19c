"""The batch pipeline: one `get_batch_pipeline` factory, scoring CSV rows with an approved model.

CreateModel (the model package named by the ModelPackageArn parameter) -> Transform (CSV
split by line, mini-batches, each output line the input row followed by its prediction).
SageMaker Pipelines runs the definition on a schedule (cloudformation/batch.yml);
`mlops batch run` runs the same JSON with the local engine. Built offline, like the
training pipeline, with the same content-addressed session; `model_deploy.build` builds and
uploads it.
"""

from __future__ import annotations

from sagemaker.core.image_uris import retrieve
from sagemaker.core.transformer import Transformer
from sagemaker.core.workflow.execution_variables import ExecutionVariables
from sagemaker.core.workflow.functions import Join
from sagemaker.core.workflow.parameters import ParameterString
from sagemaker.mlops.workflow.model_step import ModelStep
from sagemaker.mlops.workflow.pipeline import Pipeline
from sagemaker.mlops.workflow.steps import TransformStep

from mlops_core.config import Config
from mlops_core.names import MAX_PAYLOAD_BYTES
from mlops_core.targets import Target
from model_build.sessions import ContentAddressedSession, PackageModelBuilder

CSV = "text/csv"
# As the real-time endpoint, so a request either path accepts is the same.
MAX_PAYLOAD_MB = MAX_PAYLOAD_BYTES // (1024 * 1024)


def input_uri(config: Config, target: Target) -> str:
    """Where the scheduled run reads the rows to score (every object under the prefix)."""
    return f"s3://{target.bucket}/{config.project}/batch/input/"


def get_batch_pipeline(config: Config, target: Target) -> Pipeline:
    """Build the batch scoring pipeline for `config` on `target` (no upload: it has no code)."""
    project, bucket = config.project, target.bucket
    session = ContentAddressedSession(target=target, prefix=f"{project}/code")

    package_arn = ParameterString("ModelPackageArn")
    input_data = ParameterString("InputDataUrl", default_value=input_uri(config, target))
    instance_type = ParameterString(
        "TransformInstanceType",
        default_value=config.aws.get("transform_instance_type", "ml.m5.large"),
    )

    builder = PackageModelBuilder(
        package_arn,
        # Any image takes ModelBuilder's pass-through build; the package names its own.
        image_uri=retrieve("sklearn", region=target.region, instance_type="ml.m5.large",
                           version=config.sklearn_framework_version),
        role_arn=target.role,
        sagemaker_session=session,
    )
    model = ModelStep(name="CreateModel", step_args=builder.build())

    transformer = Transformer(
        model_name=model.properties.ModelName,
        instance_type=instance_type,
        # sagemaker 3.27 types TransformResources.InstanceCount as a plain int, so the count
        # comes from mlops.toml rather than from a pipeline parameter.
        instance_count=int(config.aws.get("transform_instance_count", 1)),
        strategy="MultiRecord",
        assemble_with="Line",
        accept=CSV,
        max_payload=MAX_PAYLOAD_MB,
        # Mini-batches scored at once: the container serves one per worker, one per vCPU.
        max_concurrent_transforms=int(config.aws.get("transform_max_concurrent_transforms", 2)),
        # A per-execution prefix, so a run never overwrites an earlier run's scores.
        output_path=Join(on="/", values=[f"s3://{bucket}/{project}/batch/output",
                                         ExecutionVariables.PIPELINE_EXECUTION_ID]),
        base_transform_job_name=f"{project}-batch",
        sagemaker_session=session,
    )
    transform = TransformStep(
        name="BatchTransform",
        step_args=transformer.transform(
            data=input_data, content_type=CSV, split_type="Line", join_source="Input"
        ),
    )
    return Pipeline(
        name=config.batch_pipeline_name,
        parameters=[package_arn, input_data, instance_type],
        steps=[model, transform],
        sagemaker_session=session,
    )

