"""Local executions that do not run to their end: a runner killed mid-step, and
`mlops pipeline stop`. Both leave records that say so, and a rerun resumes from the cache.

The hand-written `held` definition runs First -> Second -> Third; each holds until the test
creates its `<name>.release` file, so the execution is caught in Second.
"""

from __future__ import annotations

import os
import signal

import pytest

from mlops_local.engine import list_executions, list_steps, run
from tests.helpers import load, run_mlops, stage, start_engine, wait_for


@pytest.fixture
def held(tmp_path, project_config):
    """Start the engine on `held` (with parameter OnTerm) and wait until it is caught in
    step Second; (state, hold directory, the engine, its execution id)."""
    state, hold = tmp_path / "state", tmp_path / "hold"
    stage(state)
    hold.mkdir()
    (hold / "first.release").touch()
    engines = []

    def start(on_term: str = "exit"):
        engine = start_engine(state, "held", {"HoldDir": str(hold), "OnTerm": on_term},
                              project_config.pipeline_name)
        engines.append(engine)
        wait_for(hold / "second.started", engine)
        [execution] = list_executions(state=state)
        return state, hold, engine, execution["ExecutionId"]

    yield start
    for engine in engines:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
        engine.wait()


def steps_of(state, execution_id: str) -> dict:
    return {step["StepName"]: step for step in list_steps(execution_id, state=state)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def rerun(state, hold, project_config, on_term: str = "exit") -> dict:
    (hold / "second.release").touch()
    (hold / "third.release").touch()
    return run(load("held"), {"HoldDir": str(hold), "OnTerm": on_term},
               pipeline_name=project_config.pipeline_name, state=state)


def test_a_killed_run_is_failed_by_its_next_reader_and_a_rerun_resumes(held, project_config):
    state, hold, engine, execution_id = held()
    os.killpg(engine.pid, signal.SIGKILL)  # the runner and its job, as a closed terminal would
    engine.wait()
    reason = f"the process running it (pid {engine.pid}) ended without finishing it"

    listing = run_mlops(state, "pipeline", "executions")

    assert listing.returncode == 0, listing.stderr
    assert execution_id in listing.stdout and "Failed" in listing.stdout
    assert reason in listing.stdout
    [execution] = list_executions(state=state)
    assert execution["PipelineExecutionStatus"] == "Failed"
    assert execution["FailureReason"] == reason
    assert execution["EndTime"] >= execution["StartTime"]
    steps = steps_of(state, execution_id)
    assert steps["First"]["StepStatus"] == "Succeeded"
    second = steps["Second"]
    assert (second["StepStatus"], second["FailureReason"]) == ("Failed", reason)
    assert second["EndTime"] >= second["StartTime"]  # its duration no longer grows
    shown = run_mlops(state, "pipeline", "steps", execution_id)
    assert "Executing" not in shown.stdout and "Failed" in shown.stdout
    assert not (state / "s3" / "test" / "held" / "second").exists()

    again = rerun(state, hold, project_config)

    assert again["PipelineExecutionStatus"] == "Succeeded", again.get("FailureReason")
    steps = {step["StepName"]: step for step in again["Steps"]}
    assert steps["First"]["CacheHitResult"]["SourceExecutionId"] == execution_id
    assert "CacheHitResult" not in steps["Second"]  # half-done: run again, not reused
    assert (state / "s3" / "test" / "held" / "second" / "second.txt").read_text() == "second"


def test_pipeline_stop_ends_a_running_execution_then_refuses(held, project_config):
    state, hold, engine, execution_id = held()
    job_pid = int((hold / "second.started").read_text())

    stopped = run_mlops(state, "pipeline", "stop", execution_id)

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"execution {execution_id}: Stopped" in stopped.stdout
    assert engine.wait(timeout=120) == 0, engine.stdout.read()
    assert not alive(job_pid)
    [execution] = list_executions(state=state)
    assert execution["PipelineExecutionStatus"] == "Stopped"
    steps = steps_of(state, execution_id)
    assert steps["First"]["StepStatus"] == "Succeeded"
    assert steps["Second"]["StepStatus"] == "Stopped" and steps["Second"]["EndTime"]
    assert steps["Third"]["StepStatus"] == "Skipped"
    assert steps["Third"]["FailureReason"] == "not started: the execution was stopped"
    assert "Stopped" in run_mlops(state, "pipeline", "executions").stdout

    again = run_mlops(state, "pipeline", "stop", execution_id)
    assert again.returncode == 2
    assert f"execution {execution_id} has already ended (Stopped); nothing to stop" in (
        " ".join(again.stderr.split()))
    unknown = run_mlops(state, "pipeline", "stop", "20260101T000000000-abcdef")
    assert unknown.returncode == 2 and "no execution '20260101T000000000-abcdef'" in (
        unknown.stderr)
    assert "Traceback" not in again.stderr + unknown.stderr

    resumed = rerun(state, hold, project_config)
    assert resumed["PipelineExecutionStatus"] == "Succeeded", resumed.get("FailureReason")
    steps = {step["StepName"]: step for step in resumed["Steps"]}
    assert "CacheHitResult" in steps["First"] and "CacheHitResult" not in steps["Second"]


def test_a_step_that_completes_while_stopping_is_stopped_and_not_cached(held, project_config):
    """As a tuning job whose running trials were cut short: its result is not one to reuse."""
    state, hold, engine, execution_id = held(on_term="finish")

    stopped = run_mlops(state, "pipeline", "stop", execution_id)

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert engine.wait(timeout=120) == 0, engine.stdout.read()
    second = steps_of(state, execution_id)["Second"]
    assert second["StepStatus"] == "Stopped", second
    resumed = rerun(state, hold, project_config, on_term="finish")
    assert resumed["PipelineExecutionStatus"] == "Succeeded", resumed.get("FailureReason")
    steps = {step["StepName"]: step for step in resumed["Steps"]}
    assert "CacheHitResult" in steps["First"] and "CacheHitResult" not in steps["Second"]
