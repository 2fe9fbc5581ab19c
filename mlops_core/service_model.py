"""SageMaker's request shapes, from botocore's bundled service model, as a check on requests.

The local run must refuse what the SageMaker API would refuse. botocore's ParamValidator
checks types and required members, not maximum lengths, numeric bounds or patterns, so the
operation's input shape is walked here: types, required and unknown members, enums, string
lengths, numeric bounds, list and map sizes, and patterns (botocore's are Java regular
expressions, matched whole; the few Java-only constructs in SageMaker's are translated).

A pipeline step's Arguments are such a request with expressions in it. Before the run
(`definition_problems`) a parameter stands for its default, a Std:Join for some string, and
anything else is checked at run time only; at run time (`step_problems` with `resolved`)
every value is known. Each problem names the member path, e.g.
`HyperParameters.C: expected a string, got the Float parameter C`.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import botocore.session

# Each job step type's API operation, and the members SageMaker Pipelines fills in itself
# (the name it gives the job or model of each execution), so a step's Arguments lack them.
STEP_OPERATIONS = {
    "Processing": ("CreateProcessingJob", ("ProcessingJobName",)),
    "Training": ("CreateTrainingJob", ("TrainingJobName",)),
    "Tuning": ("CreateHyperParameterTuningJob", ("HyperParameterTuningJobName",)),
    "Transform": ("CreateTransformJob", ("TransformJobName",)),
    "Model": ("CreateModel", ("ModelName",)),
    "RegisterModel": ("CreateModelPackage", ()),
}
# What a pipeline parameter of each type can stand for.
_PARAMETER_KINDS = {"String": {"string"}, "Integer": {"integer", "long", "float", "double"},
                    "Float": {"float", "double"}, "Boolean": {"boolean"}}
_PARAMETER_TYPES = {bool: "Boolean", int: "Integer", float: "Float", str: "String"}
_EXPECTED = {"structure": "an object", "map": "an object", "list": "a list", "string": "a string",
             "integer": "an integer", "long": "an integer", "float": "a number",
             "double": "a number", "boolean": "a boolean", "timestamp": "a timestamp",
             "blob": "a base64 string"}
_ENUM_SHOWN = 8


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()  # a value not known before the run


@functools.cache
def _service_model():
    return botocore.session.get_session().get_service_model("sagemaker")


def input_shape(operation: str):
    return _service_model().operation_model(operation).input_shape


def request_problems(operation: str, request: dict, *, filled_in=()) -> list[str]:
    """What the API would refuse in a request of `operation` (all values known)."""
    walk = _Walk({}, "from")
    walk.structure(input_shape(operation), request, request, "", skip_required=set(filled_in))
    return walk.problems


def parameter_types(values: dict) -> dict:
    """An execution's parameters as `step_problems` takes them: {name: (type, value)}."""
    return {name: (_PARAMETER_TYPES[type(value)], value) for name, value in values.items()}


def step_problems(step_type: str, arguments: dict, parameters: dict,
                  resolved: dict | None = None) -> list[str]:
    """What the API would refuse in a job step's Arguments; [] for other step types.

    `parameters`: {name: (type, value)}, the value UNKNOWN when it has none yet.
    `resolved`: the Arguments as the run resolved them; without it, parameters stand for
    their values and other expressions are checked by type only.
    """
    if step_type not in STEP_OPERATIONS:
        return []
    if not isinstance(arguments, dict):
        return [f"Arguments: expected an object, got {_describe(arguments)}"]
    operation, filled_in = STEP_OPERATIONS[step_type]
    mode = "from" if resolved is not None else "the default of"
    if resolved is None:
        resolved = _static_resolve(arguments, parameters)
    walk = _Walk(parameters, mode)
    walk.structure(input_shape(operation), arguments, resolved, "", skip_required=set(filled_in))
    return walk.problems


def definition_problems(definition: dict) -> list[str]:
    """Every job step's problems (Condition branches included), each naming its step."""
    parameters = {p.get("Name"): (p.get("Type", "String"), p.get("DefaultValue", UNKNOWN))
                  for p in definition.get("Parameters") or []}
    problems = []
    for step in _steps(definition.get("Steps") or []):
        problems += [f"step {step.get('Name')}: {problem}" for problem in step_problems(
            step.get("Type", ""), step.get("Arguments") or {}, parameters)]
    return problems


def _steps(steps: list):
    for step in steps:
        yield step
        if step.get("Type") == "Condition":
            arguments = step.get("Arguments") or {}
            yield from _steps(arguments.get("IfSteps") or [])
            yield from _steps(arguments.get("ElseSteps") or [])


def _is_expression(value) -> bool:
    return (isinstance(value, dict) and len(value) == 1
            and (next(iter(value)) == "Get" or next(iter(value)).startswith("Std:")))


def _parameter(expression: dict) -> str | None:
    path = expression.get("Get")
    if isinstance(path, str) and path.startswith("Parameters.") and path.count(".") == 1:
        return path.split(".", 1)[1]
    return None


def _static_resolve(value, parameters: dict):
    """The value with each parameter replaced by its value, other expressions by UNKNOWN."""
    if _is_expression(value):
        name = _parameter(value)
        return parameters[name][1] if name in parameters else UNKNOWN
    if isinstance(value, dict):
        return {key: _static_resolve(item, parameters) for key, item in value.items()}
    if isinstance(value, list):
        return [_static_resolve(item, parameters) for item in value]
    return value


class _Walk:
    """One request's walk through its shape; `raw` is the request as written, `value` as
    resolved (they differ only where `raw` is an expression)."""

    def __init__(self, parameters: dict, mode: str):
        self.parameters = parameters
        self.mode = mode
        self.problems: list[str] = []

    def check(self, shape, raw, value, path: str, note: str = "") -> None:
        if _is_expression(raw):
            origin, kinds = self._origin(raw)
            if kinds is not None and shape.type_name not in kinds:
                self.problems.append(f"{path}: expected {_EXPECTED[shape.type_name]}, "
                                     f"got {origin}")
                return
            if value is UNKNOWN:
                return
            declared = _parameter(raw) in self.parameters
            note = f" ({self.mode} {origin})" if declared else f" (from {origin})"
            raw = value  # what it resolved to has no expressions in it
        kind = shape.type_name
        if not _has_type(kind, value):
            self.problems.append(f"{path}: expected {_EXPECTED[kind]}, got {_describe(value)}"
                                 f"{note}")
        elif kind == "structure":
            self.structure(shape, raw, value, path, note=note)
        elif kind == "list":
            self._size(shape, len(value), path, note)
            for index, (item, resolved) in enumerate(zip(raw, value, strict=True)):
                self.check(shape.member, item, resolved, f"{path}[{index}]", note)
        elif kind == "map":
            self._size(shape, len(value), path, note)
            for key, resolved in value.items():
                self.check(shape.key, key, key, f"{path} key {key!r}", note)
                self.check(shape.value, raw[key], resolved, f"{path}.{key}", note)
        elif kind == "string":
            self._string(shape, value, path, note)
        elif kind in ("integer", "long", "float", "double"):
            self._number(shape, value, path, note)

    def structure(self, shape, raw: dict, value: dict, path: str, skip_required=(),
                  note: str = "") -> None:
        prefix = f"{path}." if path else ""
        for name in shape.required_members:
            if value.get(name) is None and name not in skip_required:
                self.problems.append(f"{prefix}{name}: required member missing{note}")
        for name, resolved in value.items():
            if name not in shape.members:
                self.problems.append(f"{prefix}{name}: unknown member of {shape.name}{note}")
            elif resolved is not None:  # JSON null: the member is not set
                self.check(shape.members[name], raw[name], resolved, f"{prefix}{name}", note)

    def _origin(self, expression: dict) -> tuple[str, set | None]:
        """How a message names the expression, and the shape types it can stand for."""
        name = _parameter(expression)
        if name in self.parameters:
            kind = self.parameters[name][0]
            return f"the {kind} parameter {name}", _PARAMETER_KINDS.get(kind)
        function = next(iter(expression))
        if function == "Std:Join":
            return "a Std:Join", {"string"}
        if function == "Get" and str(expression["Get"]).startswith("Execution."):
            return expression["Get"], {"string"}
        return expression[function] if function == "Get" else function, None

    def _size(self, shape, size: int, path: str, note: str) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and size < low:
            self.problems.append(f"{path}: {size} items, at least {low} needed{note}")
        if high is not None and size > high:
            self.problems.append(f"{path}: {size} items, at most {high} allowed{note}")

    def _string(self, shape, value: str, path: str, note: str) -> None:
        if shape.enum and value not in shape.enum:
            shown = ", ".join(shape.enum[:_ENUM_SHOWN])
            more = f", ... ({len(shape.enum)} values)" if len(shape.enum) > _ENUM_SHOWN else ""
            self.problems.append(f"{path}: {_short(value)} is not one of {shown}{more}{note}")
            return
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and len(value) < low:
            self.problems.append(f"{path}: {_short(value)} is {len(value)} characters long, "
                                 f"at least {low} needed{note}")
        elif high is not None and len(value) > high:
            self.problems.append(f"{path}: {_short(value)} is {len(value)} characters long, "
                                 f"at most {high} allowed{note}")
        pattern = shape.metadata.get("pattern")
        compiled = java_pattern(pattern) if pattern else None
        if compiled and not compiled.fullmatch(value):
            self.problems.append(f"{path}: {_short(value)} does not match the pattern "
                                 f"{pattern}{note}")

    def _number(self, shape, value, path: str, note: str) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and value < low:
            self.problems.append(f"{path}: {value} is below the minimum {low}{note}")
        if high is not None and value > high:
            self.problems.append(f"{path}: {value} is above the maximum {high}{note}")


_TYPES = {"structure": dict, "map": dict, "list": list, "string": str, "integer": int,
          "long": int, "float": int | float, "double": int | float, "boolean": bool,
          "timestamp": str | int | float, "blob": str | bytes}


def _has_type(kind: str, value) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    return isinstance(value, _TYPES.get(kind, object))


def _describe(value) -> str:
    if value is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "float", str: "string", dict: "an object",
             list: "a list"}
    name = names.get(type(value), type(value).__name__)
    return name if isinstance(value, dict | list) else f"{name} {_short(value)}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# Java's Unicode categories (\p{L}: letters, ...) as Python character class ranges. Planes
# 4-13 are unassigned and 15-16 private use, so they are in none of L, M, N, P, S, Z.
_CATEGORY = re.compile(r"\\p\{([LMNPSZ])\}")
_ASSIGNED = (range(0x40000), range(0xE0000, 0xE1000))


@functools.cache
def _category_ranges() -> dict[str, str]:
    runs: dict[str, list[list[int]]] = {}
    for block in _ASSIGNED:
        for code in block:
            same = runs.setdefault(unicodedata.category(chr(code))[0], [])
            if same and same[-1][1] == code - 1:
                same[-1][1] = code
            else:
                same.append([code, code])
    return {name: "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)
            for name, ranges in runs.items()}


# Java's ASCII-only POSIX classes, as the ranges of a character class.
_POSIX = {"Alnum": "a-zA-Z0-9", "Print": r"\x20-\x7e", "ASCII": r"\x00-\x7f"}


@functools.cache
def java_pattern(pattern: str) -> re.Pattern | None:
    """A service model's (Java) pattern as a Python one; None for a construct this does not
    translate (a value is then not checked against it, rather than refused)."""
    python = re.sub(r"\[\\p\{(Print|ASCII)\}\]", lambda m: f"[{_POSIX[m[1]]}]", pattern)
    python = re.sub(r"\\p\{(Print|ASCII)\}", lambda m: f"[{_POSIX[m[1]]}]", python)
    python = python.replace(r"\p{Alnum}", _POSIX["Alnum"]).replace(r"\z", r"\Z")
    python = python.replace(r"\uD800\uDC00-\uDBFF\uDFFF", r"\U00010000-\U0010FFFF")
    python = re.sub(r"(?<!\\)\$\{\d+,\d+\}", "$", python)  # Java quantifies `$`; it means `$`
    python = _CATEGORY.sub(lambda match: _category_ranges()[match.group(1)], python)
    try:
        return re.compile(python)
    except re.error:
        return None
