"""mlops_core.templates reads the templates exactly as cfn-lint (and CloudFormation) do."""

from __future__ import annotations

import json

import pytest
from cfnlint.decode import decode

from mlops_core import templates
from mlops_core.config import ROOT

TEMPLATES = sorted((ROOT / "cloudformation").glob("*.yml"))


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_compact_body_is_the_template_cfn_lint_reads(path):
    decoded, problems = decode(str(path))
    assert not problems
    body = templates.compact_body(path)
    assert json.loads(body) == json.loads(json.dumps(decoded, default=str))
    assert len(body) < len(path.read_text())


def test_short_forms_become_long_forms(tmp_path):
    path = tmp_path / "t.yml"
    path.write_text(
        "Conditions:\n  Enabled: !Equals [!Ref Mode, 'on']\n"
        "Outputs:\n  A: {Value: !GetAtt Bucket.Arn, Condition: Enabled}\n"
        "  B: {Value: !Sub '${AWS::Region}-x'}\n"
        "  C: {Value: !If [Enabled, !GetAtt [Bucket, Arn], !Ref AWS::NoValue]}\n"
        "  D: {Value: !And [!Condition Enabled, !Not [!Condition Enabled]]}\n"
    )
    assert templates.load(path) == {
        "Conditions": {"Enabled": {"Fn::Equals": [{"Ref": "Mode"}, "on"]}},
        "Outputs": {
            "A": {"Value": {"Fn::GetAtt": ["Bucket", "Arn"]}, "Condition": "Enabled"},
            "B": {"Value": {"Fn::Sub": "${AWS::Region}-x"}},
            "C": {"Value": {"Fn::If": ["Enabled", {"Fn::GetAtt": ["Bucket", "Arn"]},
                                       {"Ref": "AWS::NoValue"}]}},
            "D": {"Value": {"Fn::And": [{"Condition": "Enabled"},
                                        {"Fn::Not": [{"Condition": "Enabled"}]}]}},
        },
    }


def test_the_refusal_filters_match_what_the_serving_code_logs():
    """The endpoint's log metric filters select the serving code's refusal events and count
    their rows; the refusal alarm watches them beside the 4XX alarm."""
    from model_build.scripts import inference

    resources = templates.load(ROOT / "cloudformation" / "endpoint.yml")["Resources"]
    event = inference.BadRequest("x", rows=3).event()
    for name, value in (("RefusedRequestsFilter", "1"), ("RefusedRowsFilter", "$.rows")):
        properties = resources[name]["Properties"]
        assert properties["FilterPattern"] == f'{{ $.event = "{event["event"]}" }}'
        assert properties["LogGroupName"] == {
            "Fn::Sub": "/aws/sagemaker/Endpoints/${ProjectName}-${StageName}"}
        assert properties["MetricTransformations"][0]["MetricValue"] == value
    assert event["rows"] == 3
    assert resources["ClientErrorAlarm"]["Properties"]["MetricName"] == "Invocation4XXErrors"
    assert resources["RefusalAlarm"]["Properties"]["Threshold"] == {"Ref": "MaxRefusedShare"}
