"""Execution and step records, one JSON file per execution under `<state>/executions/`.

Field names follow SageMaker's DescribePipelineExecution and ListPipelineExecutionSteps.
Each write replaces the file atomically, so a reader (the CLI) never sees half a record.

The process running an execution holds an exclusive flock on `<execution id>.lock` for as
long as it runs. The kernel drops the lock when the process dies however it dies, and a
recycled pid does not hold it, so a reader that can take the lock knows the record it
finds still "Executing" will never be finished: it marks it Failed (`_settle`).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from mlops_core.config import state_dir
from mlops_core.files import write_atomic
from mlops_local.engine.errors import EngineError

EXECUTION_STATUSES = ("Executing", "Succeeded", "Failed", "Stopped")
STEP_STATUSES = ("Starting", "Executing", "Succeeded", "Failed", "Skipped", "Stopped")
RUNNING = ("Starting", "Executing")


def now() -> str:
    return datetime.now(UTC).isoformat()


def executions_dir(state: Path | None = None) -> Path:
    return Path(state or state_dir()) / "executions"


class ExecutionRecord:
    """The record of one execution, kept in memory and written through on every change."""

    def __init__(self, path: Path, execution: dict):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Held before the record exists, so no reader ever sees an unlocked running record.
        self._owner = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        self.execution = {**execution, "RunnerPid": os.getpid()}
        self.steps: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._write()

    def close(self) -> None:
        """Release the run's lock: from here on the record is final."""
        _lock_path(self.path).unlink(missing_ok=True)
        os.close(self._owner)

    def _write(self) -> None:
        write_atomic(self.path, json.dumps({"execution": self.execution, "steps": self.steps},
                                           indent=1, default=str))

    def update(self, **fields) -> dict:
        with self._lock:
            self.execution.update(fields, LastModifiedTime=now())
            self._write()
            return dict(self.execution)

    def step(self, name: str, **fields) -> dict:
        """Create or update a step's record; a copy of the record as it now stands."""
        with self._lock:
            record = self.steps.setdefault(name, {"StepName": name})
            record.update(fields)
            self._write()
            return dict(record)

    def snapshot(self) -> dict:
        with self._lock:
            return {**self.execution, "Steps": [dict(s) for s in self.steps.values()]}


def _lock_path(record: Path) -> Path:
    return record.with_suffix(".lock")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EngineError(f"cannot read the execution record {path}: {err}") from None


def runner_alive(path: Path) -> bool:
    """Whether a process still holds the lock of the execution recorded at `path`."""
    try:
        probe = os.open(_lock_path(path), os.O_RDWR)
    except FileNotFoundError:  # released: the run ended (or predates the lock)
        return False
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(probe)  # closing drops the lock if the probe took it
    return False


def _settle(path: Path) -> dict:
    """The record at `path`, first marked Failed if it runs but its process has ended."""
    record = _load(path)
    if record["execution"].get("PipelineExecutionStatus") != "Executing" or runner_alive(path):
        return record
    record = _load(path)  # the runner may have finished between the two reads
    execution = record["execution"]
    if execution.get("PipelineExecutionStatus") != "Executing":
        return record
    pid = execution.get("RunnerPid", "?")
    reason = f"the process running it (pid {pid}) ended without finishing it"
    # The last sign of life: the record's last write, or later output in a step's job log.
    end = max(execution["StartTime"], _modified(path))
    for step in record["steps"].values():
        if step.get("StepStatus") in RUNNING:
            step.update(StepStatus="Failed", EndTime=max(end, _modified(step.get("LogPath"))),
                        FailureReason=reason)
            end = max(end, step["EndTime"])
    execution.update(PipelineExecutionStatus="Failed", FailureReason=reason, EndTime=end,
                     LastModifiedTime=now())
    write_atomic(path, json.dumps(record, indent=1, default=str))
    return record


def _modified(path: str | Path | None) -> str:
    try:
        moment = os.stat(path).st_mtime if path else None
    except OSError:
        moment = None
    return datetime.fromtimestamp(moment, UTC).isoformat() if moment else ""


def list_executions(pipeline_name: str | None = None, state: Path | None = None) -> list[dict]:
    """Executions (of one pipeline, or all), newest first."""
    root = executions_dir(state)
    records = [_settle(p)["execution"] for p in root.glob("*.json")] if root.is_dir() else []
    if pipeline_name:
        records = [r for r in records if r.get("PipelineName") == pipeline_name]
    return sorted(records, key=lambda r: (r.get("StartTime", ""), r["ExecutionId"]), reverse=True)


def get_execution(execution_id: str, state: Path | None = None) -> dict:
    path = executions_dir(state) / f"{execution_id}.json"
    if not path.is_file():
        raise EngineError(f"no execution {execution_id!r} in {executions_dir(state)}")
    return _settle(path)


def list_steps(execution_id: str, state: Path | None = None) -> list[dict]:
    """An execution's step records, newest first (as ListPipelineExecutionSteps)."""
    steps = list(get_execution(execution_id, state)["steps"].values())
    ordered = list(enumerate(steps))
    ordered.sort(key=lambda item: (item[1].get("StartTime") or "", item[0]), reverse=True)
    return [step for _, step in ordered]
