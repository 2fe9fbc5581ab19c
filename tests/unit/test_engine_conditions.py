import pytest

from mlops_local.engine.conditions import check, evaluate
from mlops_local.engine.errors import DefinitionError, EngineError


def identity(value):
    return value


def comparison(kind, left, right):
    return {"Type": kind, "LeftValue": left, "RightValue": right}


@pytest.mark.parametrize(("kind", "left", "right", "expected"), [
    ("Equals", 3, 3, True),
    ("Equals", "a", "b", False),
    ("Equals", 2.0, "2", True),  # a number read from JSON text compares as a number
    ("GreaterThan", 3, 2.5, True),
    ("GreaterThan", 2, 2, False),
    ("GreaterThanOrEqualTo", 2, 2, True),
    ("LessThan", 1.5, 2, True),
    ("LessThan", 2, 2, False),
    ("LessThanOrEqualTo", 2.2, 2.2, True),
    ("LessThanOrEqualTo", "2.3", 2.2, False),
])
def test_comparisons(kind, left, right, expected):
    assert evaluate(comparison(kind, left, right), identity) is expected


def test_in_not_or():
    assert evaluate({"Type": "In", "QueryValue": "b", "Values": ["a", "b"]}, identity)
    assert not evaluate({"Type": "In", "QueryValue": 3, "Values": [1, 2]}, identity)
    inner = comparison("Equals", 1, 2)
    assert evaluate({"Type": "Not", "Condition": inner}, identity)
    assert evaluate({"Type": "Or", "Conditions": [inner, comparison("Equals", 1, 1)]}, identity)
    assert not evaluate({"Type": "Or", "Conditions": [inner]}, identity)


def test_values_are_resolved_first():
    values = {"x": 5}
    resolve = lambda v: values.get(v, v) if isinstance(v, str) else v  # noqa: E731
    assert evaluate(comparison("GreaterThan", "x", 4), resolve)


def test_unsupported_condition_type_is_named():
    with pytest.raises(DefinitionError, match="'And'"):
        check({"Type": "Not", "Condition": {"Type": "And"}})


def test_incomparable_values_are_a_clear_error():
    with pytest.raises(EngineError, match="cannot compare 'a' with 2"):
        evaluate(comparison("LessThan", "a", 2), identity)
