"""Static checks of `Get Steps.X.<path>` references against the shape each step type exposes.

A step's properties are the Describe* response of the job it ran (as in SageMaker), so a path
is checked against the botocore shape of that response before anything runs.
"""

from __future__ import annotations

from functools import cache

import botocore.session

from mlops_local.engine.expressions import walk

SHAPES = {
    "Processing": "DescribeProcessingJobResponse",
    "Training": "DescribeTrainingJobResponse",
    "RegisterModel": "DescribeModelPackageOutput",
    "Model": "DescribeModelOutput",
    # A TuningStep's properties join two responses (as the SDK's Properties for it do).
    "Tuning": ("DescribeHyperParameterTuningJobResponse",
               "ListTrainingJobsForHyperParameterTuningJobResponse"),
    "Transform": "DescribeTransformJobResponse",
}


@cache
def _service_model():
    return botocore.session.get_session().get_service_model("sagemaker")


def _check_shape(shape, tokens: list) -> str | None:
    for position, token in enumerate(tokens):
        kind = shape.type_name
        if kind == "structure":
            if token not in shape.members:
                return f"{shape.name} has no {token!r}"
            shape = shape.members[token]
        elif kind == "list":
            shape = shape.member
        elif kind == "map":
            shape = shape.value
        else:
            return f"{'.'.join(map(str, tokens[:position]))} is a {kind}, not a container"
    return None


def _check_named_items(arguments: dict, tokens: list) -> str | None:
    """Outputs['train'] must name an output the step declares (when it declares them literally)."""
    data = arguments
    for position, token in enumerate(tokens):
        if isinstance(data, list) and isinstance(token, str):
            try:
                data = walk(data, [token], "")
            except ValueError:
                where = ".".join(map(str, tokens[:position]))
                return f"{where} has no item named {token!r}"
        elif isinstance(data, dict) and token in data:
            data = data[token]
        else:
            return None
    return None


def check_property(step: dict, tokens: list) -> str | None:
    """Why `Steps.<step>.<tokens>` cannot be resolved, or None when it can."""
    kind = step.get("Type")
    if not tokens:
        return "a step reference needs a property path"
    if tokens[0] == "PropertyFiles":
        names = {p.get("PropertyFileName") for p in step.get("PropertyFiles", [])}
        if len(tokens) != 2 or tokens[1] not in names:
            return f"step {step['Name']} declares no property file {tokens[1:]!r}"
        return None
    if kind == "Condition":
        return None if tokens == ["Outcome"] else "a Condition step has only the property Outcome"
    if kind not in SHAPES:
        return f"a {kind} step has no properties"
    shapes = SHAPES[kind] if isinstance(SHAPES[kind], tuple) else (SHAPES[kind],)
    problems = [_check_shape(_service_model().shape_for(s), tokens) for s in shapes]
    problem = None if None in problems else problems[0]
    return problem or _check_named_items(step.get("Arguments", {}), tokens)
