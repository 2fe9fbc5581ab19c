"""Execution records whose runner is gone: told apart by the run's lock, not by its pid."""

from __future__ import annotations

import os

from mlops_local.engine import get_execution, list_executions
from mlops_local.engine.records import ExecutionRecord, executions_dir


def running_record(state, execution_id: str = "e1") -> ExecutionRecord:
    record = ExecutionRecord(executions_dir(state) / f"{execution_id}.json", {
        "ExecutionId": execution_id, "PipelineName": "demo",
        "PipelineExecutionStatus": "Executing", "StartTime": "2026-01-01T00:00:00+00:00",
    })
    record.step("Train", StepStatus="Executing", StartTime="2026-01-01T00:00:01+00:00")
    record.step("Prepare", StepStatus="Succeeded", StartTime="2026-01-01T00:00:00+00:00",
                EndTime="2026-01-01T00:00:01+00:00")
    return record


def test_a_record_whose_lock_is_held_is_left_running(tmp_path):
    record = running_record(tmp_path)
    try:
        assert list_executions(state=tmp_path)[0]["PipelineExecutionStatus"] == "Executing"
        assert get_execution("e1", tmp_path)["steps"]["Train"]["StepStatus"] == "Executing"
    finally:
        record.close()


def test_a_live_pid_without_the_lock_is_a_dead_run(tmp_path):
    """The recorded pid is this test's own, alive, as a recycled pid would be."""
    running_record(tmp_path).close()  # the lock is gone but the record still says Executing
    reason = f"the process running it (pid {os.getpid()}) ended without finishing it"

    [execution] = list_executions(state=tmp_path)

    assert execution["PipelineExecutionStatus"] == "Failed"
    assert execution["FailureReason"] == reason
    steps = get_execution("e1", tmp_path)["steps"]
    assert steps["Train"]["StepStatus"] == "Failed"
    assert steps["Train"]["FailureReason"] == reason
    assert steps["Train"]["EndTime"] >= steps["Train"]["StartTime"]
    assert steps["Prepare"]["EndTime"] == "2026-01-01T00:00:01+00:00"  # finished ones untouched
    assert execution["EndTime"] >= steps["Train"]["EndTime"]
