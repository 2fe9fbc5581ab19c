"""Execution and step records, one JSON file per execution under `<state>/executions/`.

Field names follow SageMaker's DescribePipelineExecution and ListPipelineExecutionSteps.
Each write replaces the file atomically, so a reader (the CLI) never sees half a record.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from mlops_core.config import state_dir
from mlops_core.files import write_atomic
from mlops_local.engine.errors import EngineError

EXECUTION_STATUSES = ("Executing", "Succeeded", "Failed", "Stopped")
STEP_STATUSES = ("Starting", "Executing", "Succeeded", "Failed", "Skipped")


def now() -> str:
    return datetime.now(UTC).isoformat()


def executions_dir(state: Path | None = None) -> Path:
    return Path(state or state_dir()) / "executions"


class ExecutionRecord:
    """The record of one execution, kept in memory and written through on every change."""

    def __init__(self, path: Path, execution: dict):
        self.path = path
        self.execution = execution
        self.steps: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._write()

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


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EngineError(f"cannot read the execution record {path}: {err}") from None


def list_executions(pipeline_name: str | None = None, state: Path | None = None) -> list[dict]:
    """Executions (of one pipeline, or all), newest first."""
    root = executions_dir(state)
    records = [_load(p)["execution"] for p in root.glob("*.json")] if root.is_dir() else []
    if pipeline_name:
        records = [r for r in records if r.get("PipelineName") == pipeline_name]
    return sorted(records, key=lambda r: (r.get("StartTime", ""), r["ExecutionId"]), reverse=True)


def get_execution(execution_id: str, state: Path | None = None) -> dict:
    path = executions_dir(state) / f"{execution_id}.json"
    if not path.is_file():
        raise EngineError(f"no execution {execution_id!r} in {executions_dir(state)}")
    return _load(path)


def list_steps(execution_id: str, state: Path | None = None) -> list[dict]:
    """An execution's step records, newest first (as ListPipelineExecutionSteps)."""
    steps = list(get_execution(execution_id, state)["steps"].values())
    ordered = list(enumerate(steps))
    ordered.sort(key=lambda item: (item[1].get("StartTime") or "", item[0]), reverse=True)
    return [step for _, step in ordered]
