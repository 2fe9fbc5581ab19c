import pytest

from mlops_local.engine.errors import ParameterError
from mlops_local.engine.parameters import resolve_parameters

DECLARED = [
    {"Name": "Url", "Type": "String", "DefaultValue": "s3://b/k"},
    {"Name": "Count", "Type": "Integer", "DefaultValue": 1},
    {"Name": "Threshold", "Type": "Float", "DefaultValue": 2.2},
    {"Name": "Strict", "Type": "Boolean", "DefaultValue": False},
    {"Name": "Status", "Type": "String", "DefaultValue": "Pending",
     "EnumValues": ["Pending", "Approved"]},
]


def test_defaults_apply_without_overrides():
    assert resolve_parameters(DECLARED, None) == {
        "Url": "s3://b/k", "Count": 1, "Threshold": 2.2, "Strict": False, "Status": "Pending"}


def test_overrides_are_converted_from_command_line_strings():
    values = resolve_parameters(DECLARED, {"Count": "3", "Threshold": "2.5", "Strict": "true",
                                           "Status": "Approved"})
    assert (values["Count"], values["Threshold"], values["Strict"]) == (3, 2.5, True)
    assert resolve_parameters(DECLARED, {"Threshold": 3})["Threshold"] == 3.0


@pytest.mark.parametrize(("override", "message"), [
    ({"Count": "2.5"}, "Count is Integer; '2.5'"),
    ({"Count": True}, "Count is Integer"),
    ({"Threshold": "high"}, "Threshold is Float; 'high'"),
    ({"Strict": "yes"}, "Strict is Boolean"),
    ({"Url": 5}, "Url is String"),
    ({"Status": "Rejected"}, r"Status must be one of \['Pending', 'Approved'\]"),
    ({"Treshold": 1}, "unknown parameter.*Treshold"),
])
def test_bad_overrides_name_the_parameter(override, message):
    with pytest.raises(ParameterError, match=message):
        resolve_parameters(DECLARED, override)


def test_parameter_without_default_needs_a_value():
    declared = [{"Name": "Dir", "Type": "String"}]
    with pytest.raises(ParameterError, match="Dir has no default"):
        resolve_parameters(declared, {})
    assert resolve_parameters(declared, {"Dir": "/x"}) == {"Dir": "/x"}
