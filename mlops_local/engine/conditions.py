"""Condition step conditions, as the SDK emits them (`sagemaker.core.workflow.conditions`)."""

from __future__ import annotations

import operator
from collections.abc import Callable

from mlops_local.engine.errors import DefinitionError, EngineError

COMPARISONS: dict[str, Callable] = {
    "Equals": operator.eq,
    "GreaterThan": operator.gt,
    "GreaterThanOrEqualTo": operator.ge,
    "LessThan": operator.lt,
    "LessThanOrEqualTo": operator.le,
}
LOGICAL = ("In", "Not", "Or")
TYPES = (*COMPARISONS, *LOGICAL)


def _number(value):
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _comparable(left, right):
    """Compare numbers as numbers even when one side is a numeric string (e.g. from JSON)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left, right
    numbers = _number(left), _number(right)
    if None not in numbers and (not isinstance(left, str) or not isinstance(right, str)):
        return numbers
    return left, right


def check(condition: dict) -> None:
    """Raise DefinitionError for a condition type or shape the engine does not know."""
    kind = condition.get("Type")
    if kind not in TYPES:
        raise DefinitionError(
            f"unsupported condition type {kind!r}; supported: {', '.join(TYPES)}"
        )
    if kind == "Not":
        check(condition.get("Condition") or {})
    elif kind == "Or":
        for inner in condition.get("Conditions", []):
            check(inner)


def evaluate(condition: dict, resolve: Callable) -> bool:
    """Whether a condition holds; `resolve` turns expressions into values."""
    kind = condition.get("Type")
    if kind in COMPARISONS:
        left, right = resolve(condition.get("LeftValue")), resolve(condition.get("RightValue"))
        left, right = _comparable(left, right)
        try:
            return bool(COMPARISONS[kind](left, right))
        except TypeError:
            raise EngineError(
                f"condition {kind}: cannot compare {left!r} with {right!r}"
            ) from None
    if kind == "In":
        query = resolve(condition.get("QueryValue"))
        return any(
            _comparable(query, value)[0] == _comparable(query, value)[1]
            for value in resolve(condition.get("Values", []))
        )
    if kind == "Not":
        return not evaluate(condition["Condition"], resolve)
    if kind == "Or":
        return any(evaluate(inner, resolve) for inner in condition.get("Conditions", []))
    raise DefinitionError(f"unsupported condition type {kind!r}")
