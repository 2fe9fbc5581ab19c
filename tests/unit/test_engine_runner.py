import csv

import pytest

from mlops_local.engine import list_executions, list_steps, run
from tests.helpers import ABALONE, load, stage


def mean_rings() -> float:
    with open(ABALONE) as handle:
        rings = [float(row["rings"]) for row in csv.DictReader(handle)]
    return sum(rings) / len(rings)


@pytest.fixture
def state(tmp_path):
    stage(tmp_path)
    return tmp_path


def steps_by_name(execution: dict) -> dict:
    return {step["StepName"]: step for step in execution["Steps"]}


def test_if_branch_runs_and_property_file_and_execution_paths_resolve(state):
    events = []
    execution = run(load("branching"), pipeline_name="demo", state=state,
                    on_step_event=lambda name, status, record: events.append((name, status)))
    assert execution["PipelineExecutionStatus"] == "Succeeded"
    steps = steps_by_name(execution)
    assert steps["CheckRings"]["Properties"] == {"Outcome": True}
    assert steps["Publish"]["StepStatus"] == "Succeeded"
    assert steps["RingsTooHigh"]["StepStatus"] == "Skipped"
    assert "branch not taken" in steps["RingsTooHigh"]["FailureReason"]
    summary_uri = f"s3://test/runs/{execution['ExecutionId']}/summary"
    assert steps["Summarize"]["Outputs"] == [summary_uri]
    published = (state / "s3/test/published/summary.json").read_text()
    assert f'"rows": {4177}' in published and '"label": "first"' in published
    assert ("Summarize", "Executing") in events and ("Publish", "Succeeded") in events
    assert events.index(("Summarize", "Succeeded")) < events.index(("CheckRings", "Executing"))


def test_else_branch_fails_with_the_resolved_message(state):
    execution = run(load("branching"), {"Threshold": "5"}, pipeline_name="demo", state=state)
    assert execution["PipelineExecutionStatus"] == "Failed"
    expected = f"mean rings {mean_rings()} is above the threshold 5.0"
    assert execution["FailureReason"] == expected
    steps = steps_by_name(execution)
    assert steps["RingsTooHigh"]["StepStatus"] == "Failed"
    assert steps["RingsTooHigh"]["FailureReason"] == expected
    assert steps["Publish"]["StepStatus"] == "Skipped"
    assert not (state / "s3/test/published").exists()


def test_failed_job_reports_its_message_and_uploads_nothing(state):
    execution = run(load("branching"), {"Label": "fail"}, pipeline_name="demo", state=state)
    assert execution["PipelineExecutionStatus"] == "Failed"
    summarize = steps_by_name(execution)["Summarize"]
    assert summarize["StepStatus"] == "Failed"
    reason = summarize["FailureReason"]
    assert reason.startswith("refusing label 'fail' after 4177 rows")
    log = state / "jobs" / execution["ExecutionId"] / "Summarize" / "job.log"
    assert str(log) in reason and "summarize.py --label fail" in reason
    assert not (state / "s3/test/runs").exists()  # the partial summary.json was not uploaded
    assert steps_by_name(execution)["CheckRings"]["StepStatus"] == "Skipped"


def test_independent_steps_run_concurrently_and_depends_on_waits(state, tmp_path_factory):
    barrier = tmp_path_factory.mktemp("barrier")
    execution = run(load("parallel"), {"BarrierDir": str(barrier)}, state=state)
    # Each of Left and Right waits for the other to start, so both succeed only if they overlap.
    assert execution["PipelineExecutionStatus"] == "Succeeded", execution["FailureReason"]
    done = max(float((barrier / f"{n}.done").read_text()) for n in ("left", "right"))
    assert float((barrier / "after.started").read_text()) >= done


def test_records_list_newest_first(state):
    first = run(load("branching"), pipeline_name="demo", state=state)
    second = run(load("branching"), {"Threshold": "1"}, pipeline_name="demo", state=state)
    run(load("branching"), pipeline_name="other", state=state)
    listed = list_executions("demo", state=state)
    assert [e["ExecutionId"] for e in listed] == [second["ExecutionId"], first["ExecutionId"]]
    assert [e["PipelineExecutionStatus"] for e in listed] == ["Failed", "Succeeded"]
    assert len(list_executions(state=state)) == 3
    names = [s["StepName"] for s in list_steps(first["ExecutionId"], state=state)]
    assert names[-1] == "Summarize" and names.index("Publish") < names.index("CheckRings")
