"""What each step type does when it runs, given its resolved arguments."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlops_core import service_model
from mlops_local.engine import conditions
from mlops_local.engine.errors import StepFailure
from mlops_local.engine.expressions import Context, to_text
from mlops_local.engine.job import Job
from mlops_local.engine.models import create_model, register_model
from mlops_local.engine.processing import run_processing
from mlops_local.engine.training import run_training
from mlops_local.engine.transform import run_transform
from mlops_local.engine.tuning import run_tuning
from mlops_local.registry import LocalRegistry


class FailStepReached(Exception):
    """A Fail step ran; its message is the execution's failure reason."""


@dataclass
class Outcome:
    properties: dict
    metadata: dict = field(default_factory=dict)


def run_condition(step: dict, context: Context) -> Outcome:
    checks = step.get("Arguments", {}).get("Conditions", [])
    outcome = all(conditions.evaluate(c, context.resolve) for c in checks)
    return Outcome({"Outcome": outcome}, {"Condition": {"Outcome": str(outcome).lower()}})


def run_fail(step: dict, context: Context) -> None:
    message = context.resolve(step.get("Arguments", {}).get("ErrorMessage", ""))
    raise FailStepReached(to_text(message) if message not in (None, "") else "Fail step reached")


def check_arguments(step: dict, arguments: dict, parameters: dict) -> None:
    """Refuse, before its job starts, a step whose request the SageMaker API would refuse
    (`arguments` as resolved; `parameters` the execution's values)."""
    problems = service_model.step_problems(
        step.get("Type", ""), step.get("Arguments", {}), service_model.parameter_types(parameters),
        resolved=arguments)
    if problems:
        operation = service_model.STEP_OPERATIONS[step["Type"]][0]
        raise StepFailure(f"SageMaker would refuse this {operation} request: "
                          + "; ".join(problems))


def run_job(step_type: str, arguments: dict, job: Job, registry: LocalRegistry) -> Outcome:
    if step_type == "Processing":
        properties = run_processing(arguments, job)
        return Outcome(properties, {"ProcessingJob": {"Arn": properties["ProcessingJobArn"]}})
    if step_type == "Training":
        properties = run_training(arguments, job)
        return Outcome(properties, {"TrainingJob": {"Arn": properties["TrainingJobArn"]}})
    if step_type == "Tuning":
        properties = run_tuning(arguments, job)
        arn = properties["HyperParameterTuningJobArn"]
        return Outcome(properties, {"TuningJob": {"Arn": arn}})
    if step_type == "RegisterModel":
        properties = register_model(arguments, registry)
        return Outcome(properties, {"RegisterModel": {"Arn": properties["ModelPackageArn"]}})
    if step_type == "Model":
        properties = create_model(arguments, job)
        return Outcome(properties, {"Model": {"Arn": properties["ModelArn"]}})
    if step_type == "Transform":
        properties, rows = run_transform(arguments, job, registry)
        return Outcome(properties, {"TransformJob": {"Arn": properties["TransformJobArn"]},
                                    "Rows": rows})
    raise ValueError(f"no runner for step type {step_type!r}")  # graph.build rejects these first
