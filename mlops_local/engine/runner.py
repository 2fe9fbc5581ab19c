"""Run a SageMaker pipeline definition locally: order, branches, concurrency, caching, records."""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

from mlops_core.config import state_dir
from mlops_local.engine.cache import CACHED_TYPES, StepCache, output_uris, parse_duration
from mlops_local.engine.errors import DefinitionError, EngineError
from mlops_local.engine.expressions import Context
from mlops_local.engine.graph import Graph, Node, build
from mlops_local.engine.job import Job
from mlops_local.engine.parameters import resolve_parameters
from mlops_local.engine.records import ExecutionRecord, executions_dir, now
from mlops_local.engine.steps import (
    FailStepReached,
    Outcome,
    check_arguments,
    run_condition,
    run_fail,
    run_job,
)
from mlops_local.registry import LOCAL_ACCOUNT, LocalRegistry
from mlops_local.store import LocalStore

StepEvent = Callable[[str, str, dict], None]
DONE = ("Succeeded", "Failed", "Skipped")


def new_execution_id() -> str:
    """Sortable by start time, unique among concurrent starts."""
    moment = datetime.now(UTC)
    return f"{moment:%Y%m%dT%H%M%S}{moment.microsecond // 1000:03d}-{secrets.token_hex(3)}"


def _job_name(execution_id: str, step: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", f"pipelines-{execution_id}-{step}")[:63].rstrip("-")


def _check_cache_configs(graph: Graph) -> None:
    for node in graph.nodes.values():
        expire = (node.step.get("CacheConfig") or {}).get("ExpireAfter")
        if expire:
            try:
                parse_duration(expire)
            except DefinitionError as err:
                raise DefinitionError(f"step {node.name}: {err}") from None


class _Execution:
    """One run of a checked graph."""

    def __init__(self, graph: Graph, context: Context, record: ExecutionRecord, *,
                 pipeline: str, state: Path, registry: LocalRegistry, region: str,
                 on_step_event: StepEvent | None):
        self.graph = graph
        self.context = context
        self.record = record
        self.pipeline = pipeline
        self.state = state
        self.registry = registry
        self.region = region
        self.cache = StepCache(state / "cache", context.store)
        self.on_step_event = on_step_event
        self.status = {name: "Pending" for name in graph.order}
        self.outcomes: dict[str, bool] = {}
        self.failure: str | None = None
        self._event_lock = threading.Lock()

    @property
    def execution_id(self) -> str:
        return self.record.execution["ExecutionId"]

    def _emit(self, name: str, status: str, **fields) -> None:
        record = self.record.step(name, StepStatus=status, **fields)
        if self.on_step_event:
            with self._event_lock:
                self.on_step_event(name, status, record)

    # -- scheduling ------------------------------------------------------------------------

    def _skip_reason(self, node: Node) -> str | None:
        """Why a pending step can never run, or None while it still may."""
        if node.branch:
            condition, wanted = node.branch
            if condition in self.outcomes and self.outcomes[condition] != wanted:
                return f"branch not taken: {condition} evaluated to {self.outcomes[condition]}"
        for need in sorted(node.needs):
            if self.status[need] in ("Failed", "Skipped"):
                return f"step {need} {self.status[need].lower()}"
        return None

    def _ready(self) -> list[Node]:
        ready = []
        for name in self.graph.order:
            node = self.graph[name]
            if self.status[name] == "Pending" and all(
                self.status[n] == "Succeeded" for n in node.needs
            ) and not self._skip_reason(node):
                ready.append(node)
        return ready

    def _mark_skipped(self) -> None:
        changed = True
        while changed:
            changed = False
            for name in self.graph.order:
                if self.status[name] != "Pending":
                    continue
                reason = self._skip_reason(self.graph[name])
                if reason is None and self.failure:
                    reason = "not started: the execution failed"
                if reason:
                    self.status[name] = "Skipped"
                    moment = now()
                    self._emit(name, "Skipped", StepType=self.graph[name].type,
                               StartTime=moment, EndTime=moment, FailureReason=reason)
                    changed = True

    def run(self, max_workers: int) -> dict:
        running: dict[Future, str] = {}
        pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="step")
        try:
            while True:
                if not self.failure:
                    for node in self._ready():
                        self.status[node.name] = "Executing"
                        running[pool.submit(self._run_step, node)] = node.name
                self._mark_skipped()
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    self.status[name] = future.result()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            for name in running.values():
                self._emit(name, "Stopped", EndTime=now(), FailureReason="stopped by the user")
            self.record.update(PipelineExecutionStatus="Stopped", EndTime=now())
            raise
        pool.shutdown()
        status = "Failed" if self.failure else "Succeeded"
        self.record.update(PipelineExecutionStatus=status, EndTime=now(),
                           FailureReason=self.failure or "")
        return self.record.snapshot()

    # -- one step ----------------------------------------------------------------------------

    def _run_step(self, node: Node) -> str:
        """Run one step in a worker thread; its final status."""
        job = Job(_job_name(self.execution_id, node.name),
                  self.state / "jobs" / self.execution_id / node.name,
                  self.context.store, self.region)
        log = {"LogPath": str(job.log)} if node.type in CACHED_TYPES else {}
        self._emit(node.name, "Executing", StepType=node.type, StartTime=now(),
                   StepDisplayName=node.step.get("DisplayName", node.name), **log)
        try:
            outcome, cache_source = self._outcome(node, job)
        except FailStepReached as reached:
            return self._fail(node, str(reached), {"Fail": {"ErrorMessage": str(reached)}})
        except EngineError as err:
            return self._fail(node, str(err), {})
        except Exception as err:  # a bug must still end the step, with its traceback in the log
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "a") as log:
                log.write(traceback.format_exc())
            return self._fail(node, f"internal error {type(err).__name__}: {err} (see {job.log})",
                              {})
        self.context.set_properties(node.name, outcome.properties)
        if node.type == "Condition":
            self.outcomes[node.name] = outcome.properties["Outcome"]
        fields = {"Metadata": outcome.metadata, "Properties": outcome.properties}
        if node.type in CACHED_TYPES:
            fields["Outputs"] = output_uris(node.type, outcome.properties)
            fields["LogPath"] = str(
                self.state / "jobs" / (cache_source or self.execution_id) / node.name / "job.log"
            )
        if cache_source:
            fields["CacheHitResult"] = {
                "SourcePipelineExecutionArn": self._execution_arn(cache_source),
                "SourceExecutionId": cache_source,
            }
        self._emit(node.name, "Succeeded", EndTime=now(), **fields)
        return "Succeeded"

    def _fail(self, node: Node, reason: str, metadata: dict) -> str:
        if not self.failure:  # a Fail step's message is the execution's reason, as in SageMaker
            self.failure = reason if node.type == "Fail" else f"step {node.name} failed: {reason}"
        self._emit(node.name, "Failed", EndTime=now(), FailureReason=reason, Metadata=metadata)
        return "Failed"

    def _outcome(self, node: Node, job: Job) -> tuple[Outcome, str | None]:
        """What the step produced, and the execution it was cached from (if it was)."""
        if node.type == "Condition":
            return run_condition(node.step, self.context), None
        if node.type == "Fail":
            run_fail(node.step, self.context)
        variable = "TrainingJobName" if node.type == "Training" else "ProcessingJobName"
        context = dataclasses.replace(
            self.context, execution={**self.context.execution, variable: job.name}
        )
        arguments = context.resolve(node.step.get("Arguments", {}))
        check_arguments(node.step, arguments, self.context.parameters)
        cache_config = node.step.get("CacheConfig") or {}
        if node.type not in CACHED_TYPES or not cache_config.get("Enabled"):
            return run_job(node.type, arguments, job, self.registry), None
        key = self.cache.key(node.type, arguments)
        hit = self.cache.lookup(self.pipeline, node.name, key, cache_config.get("ExpireAfter"))
        if hit:
            return Outcome(hit["properties"], hit.get("metadata", {})), hit["execution_id"]
        outcome = run_job(node.type, arguments, job, self.registry)
        self.cache.save(self.pipeline, node.name, key, node.type, self.execution_id,
                        outcome.properties, metadata=outcome.metadata)
        return outcome, None

    def _execution_arn(self, execution_id: str) -> str:
        return (f"arn:aws:sagemaker:{self.region}:{LOCAL_ACCOUNT}:pipeline/{self.pipeline}"
                f"/execution/{execution_id}")


def run(
    definition: dict,
    parameters: dict | None = None,
    *,
    pipeline_name: str = "pipeline",
    execution_name: str | None = None,
    on_step_event: StepEvent | None = None,
    max_workers: int = 2,
    state: Path | None = None,
    region: str = "us-east-1",
) -> dict:
    """Run a pipeline definition to the end; the execution record with its steps.

    The definition and parameters are checked first (DefinitionError, ParameterError) and
    nothing runs if they are wrong. `on_step_event(step_name, status, record)` is called as
    each step starts and ends, from worker threads but never two calls at once.
    """
    graph = build(definition)
    _check_cache_configs(graph)
    values = resolve_parameters(definition.get("Parameters", []) or [], parameters)
    state = Path(state or state_dir())
    store = LocalStore(state / "s3")
    execution_id = new_execution_id()
    started = now()
    arn = (f"arn:aws:sagemaker:{region}:{LOCAL_ACCOUNT}:pipeline/{pipeline_name}"
           f"/execution/{execution_id}")
    context = Context(
        parameters=values,
        execution={
            "PipelineName": pipeline_name,
            "PipelineArn": f"arn:aws:sagemaker:{region}:{LOCAL_ACCOUNT}:pipeline/{pipeline_name}",
            "PipelineExecutionId": execution_id,
            "PipelineExecutionArn": arn,
            "StartDateTime": started,
        },
        property_files={
            node.name: {p["PropertyFileName"]: p for p in node.step.get("PropertyFiles", [])}
            for node in graph.nodes.values()
        },
        store=store,
    )
    record = ExecutionRecord(executions_dir(state) / f"{execution_id}.json", {
        "ExecutionId": execution_id,
        "PipelineExecutionArn": arn,
        "PipelineName": pipeline_name,
        "PipelineExecutionDisplayName": execution_name or execution_id,
        "PipelineExecutionStatus": "Executing",
        "StartTime": started,
        "Parameters": [{"Name": k, "Value": v} for k, v in values.items()],
        "JobsDir": str(state / "jobs" / execution_id),
    })
    execution = _Execution(
        graph, context, record, pipeline=pipeline_name, state=state,
        registry=LocalRegistry(state / "registry.db", region=region), region=region,
        on_step_event=on_step_event,
    )
    return execution.run(max(2, max_workers))
