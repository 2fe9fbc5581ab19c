"""RegisterModel and Model steps: model packages in the local registry, model records."""

from __future__ import annotations

from mlops_local.engine.errors import StepFailure
from mlops_local.engine.job import Job
from mlops_local.registry import LocalRegistry, RegistryError


def register_model(arguments: dict, registry: LocalRegistry) -> dict:
    """Create the model package the resolved CreateModelPackage request describes."""
    try:
        arn = registry.create_model_package(**arguments)["ModelPackageArn"]
        return registry.describe_model_package(arn)
    except (RegistryError, TypeError) as err:
        raise StepFailure(f"cannot register the model package: {err}") from None


def create_model(arguments: dict, job: Job) -> dict:
    """A Model step: SageMaker creates a model record; locally its properties are the record."""
    return {**arguments, "ModelName": job.name, "ModelArn": job.arn("model")}
