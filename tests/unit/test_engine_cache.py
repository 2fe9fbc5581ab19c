import json
from datetime import timedelta

import pytest

from mlops_local.engine import run
from mlops_local.engine.cache import parse_duration
from mlops_local.engine.errors import DefinitionError
from tests.helpers import ABALONE, RAW_URI, load, stage


@pytest.fixture
def state(tmp_path):
    stage(tmp_path)
    return tmp_path


def summarize(execution: dict) -> dict:
    return next(s for s in execution["Steps"] if s["StepName"] == "Summarize")


def cache_entries(state) -> list:
    return sorted((state / "cache" / "demo" / "Summarize").glob("*.json"))


def test_second_run_reuses_the_first_runs_outputs(state):
    first = run(load("branching"), pipeline_name="demo", state=state)
    second = run(load("branching"), pipeline_name="demo", state=state)
    hit = summarize(second)
    assert hit["CacheHitResult"]["SourceExecutionId"] == first["ExecutionId"]
    assert hit["Outputs"] == summarize(first)["Outputs"]  # the first run's output location
    assert not (state / "jobs" / second["ExecutionId"] / "Summarize").exists()
    assert second["PipelineExecutionStatus"] == "Succeeded"
    # Publish has no CacheConfig, so it ran again, on the cached summary.
    publish = next(s for s in second["Steps"] if s["StepName"] == "Publish")
    assert "CacheHitResult" not in publish and publish["StepStatus"] == "Succeeded"


def test_changed_arguments_or_input_data_miss(state):
    run(load("branching"), pipeline_name="demo", state=state)
    other_label = run(load("branching"), {"Label": "second"}, pipeline_name="demo", state=state)
    assert "CacheHitResult" not in summarize(other_label)
    fewer_rows = "".join(ABALONE.read_text().splitlines(keepends=True)[:101])
    (state / "s3" / RAW_URI.removeprefix("s3://")).write_text(fewer_rows)
    new_data = run(load("branching"), pipeline_name="demo", state=state)
    assert "CacheHitResult" not in summarize(new_data)
    uri = summarize(new_data)["Outputs"][0]
    assert '"rows": 100' in (state / "s3" / uri.removeprefix("s3://") / "summary.json").read_text()


def test_expired_entries_miss(state):
    run(load("branching"), pipeline_name="demo", state=state)
    (entry,) = cache_entries(state)
    record = json.loads(entry.read_text())
    record["finished"] = "2000-01-01T00:00:00+00:00"
    entry.write_text(json.dumps(record))
    again = run(load("branching"), pipeline_name="demo", state=state)
    assert "CacheHitResult" not in summarize(again)


def test_changed_outputs_of_the_cached_run_miss(state):
    first = run(load("branching"), pipeline_name="demo", state=state)
    output = state / "s3" / summarize(first)["Outputs"][0].removeprefix("s3://")
    (output / "summary.json").write_text("{}")
    again = run(load("branching"), pipeline_name="demo", state=state)
    assert "CacheHitResult" not in summarize(again)


def test_failed_runs_are_never_reused(state):
    failed = run(load("branching"), {"Label": "fail"}, pipeline_name="demo", state=state)
    assert not cache_entries(state)
    again = run(load("branching"), {"Label": "fail"}, pipeline_name="demo", state=state)
    assert summarize(again)["StepStatus"] == "Failed" and "CacheHitResult" not in summarize(again)
    assert failed["ExecutionId"] != again["ExecutionId"]


@pytest.mark.parametrize(("text", "expected"), [
    ("P30D", timedelta(days=30)),
    ("PT1H30M", timedelta(hours=1, minutes=30)),
    ("P1Y2M", timedelta(days=365 + 60)),
    ("P2W", timedelta(weeks=2)),
    ("PT0.5S", timedelta(seconds=0.5)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30d", "P", "PT", "P1DT", ""])
def test_parse_duration_refuses_other_text(text):
    with pytest.raises(DefinitionError, match="ISO 8601"):
        parse_duration(text)
