"""Pipeline parameters: defaults from the definition, overrides type-checked like SageMaker's."""

from __future__ import annotations

from mlops_local.engine.errors import ParameterError

TYPES = ("String", "Integer", "Float", "Boolean")


def _convert(name: str, kind: str, value):
    """The override as the parameter's type; strings (as from a command line) are parsed."""
    if kind == "String":
        if isinstance(value, str):
            return value
    elif kind == "Integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind == "Float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    raise ParameterError(f"parameter {name} is {kind}; {value!r} is not a valid {kind} value")


def resolve_parameters(declared: list[dict], overrides: dict | None) -> dict:
    """Each declared parameter's value: the override if given, else its default."""
    by_name = {p["Name"]: p for p in declared}
    unknown = sorted(set(overrides or {}) - set(by_name))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {', '.join(unknown)}; the pipeline declares: "
            f"{', '.join(sorted(by_name)) or 'none'}"
        )
    values = {}
    for name, spec in by_name.items():
        kind = spec.get("Type", "String")
        if kind not in TYPES:
            raise ParameterError(f"parameter {name} has unsupported type {kind!r}")
        if overrides and name in overrides:
            value = _convert(name, kind, overrides[name])
        elif "DefaultValue" in spec:
            value = _convert(name, kind, spec["DefaultValue"])
        else:
            raise ParameterError(f"parameter {name} has no default value; give it a value")
        allowed = spec.get("EnumValues")
        if allowed and value not in allowed:
            raise ParameterError(f"parameter {name} must be one of {allowed}; got {value!r}")
        values[name] = value
    return values
