"""Run a SageMaker pipeline definition locally: order, branches, concurrency, caching, records."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import signal
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mlops_core.config import state_dir
from mlops_local import warm
from mlops_local.engine.cache import CACHED_TYPES, StepCache, output_uris, parse_duration
from mlops_local.engine.errors import DefinitionError, EngineError
from mlops_local.engine.expressions import Context
from mlops_local.engine.graph import Graph, Node, build
from mlops_local.engine.job import Job, JobStopped, Processes
from mlops_local.engine.parameters import resolve_parameters
from mlops_local.engine.records import ExecutionRecord, executions_dir, get_execution, now
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
POLL_S = 0.2  # how soon the scheduler sees a stop request
STOP_TIMEOUT_S = 60
STOP_REASON = "stopped on request (SIGTERM, as `mlops pipeline stop` sends)"


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
        self.stopping: str | None = None
        self.processes = Processes()
        self.running: dict[Future, str] = {}
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
                if reason is None and self.stopping:
                    reason = "not started: the execution was stopped"
                elif reason is None and self.failure:
                    reason = "not started: the execution failed"
                if reason:
                    self.status[name] = "Skipped"
                    moment = now()
                    self._emit(name, "Skipped", StepType=self.graph[name].type,
                               StartTime=moment, EndTime=moment, FailureReason=reason)
                    changed = True

    def request_stop(self, reason: str) -> None:
        """Start no more steps and end the running ones; safe to call from a signal handler."""
        self.stopping = self.stopping or reason

    def run(self, max_workers: int) -> dict:
        pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="step")
        try:
            self._schedule(pool)
        except KeyboardInterrupt:
            self.request_stop("stopped by the user (interrupt)")
            self._schedule(pool)  # starts nothing: waits for the running steps to end
            self._finish()
            raise
        finally:
            pool.shutdown()
        return self._finish()

    def _schedule(self, pool: ThreadPoolExecutor) -> None:
        while True:
            if self.stopping and not self.processes.stopped:
                self.processes.stop()
            if not self.failure and not self.stopping:
                for node in self._ready():
                    self.status[node.name] = "Executing"
                    self.running[pool.submit(self._run_step, node)] = node.name
            self._mark_skipped()
            if not self.running:
                return
            finished, _ = wait(self.running, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                name = self.running.pop(future)
                self.status[name] = future.result()

    def _finish(self) -> dict:
        status = "Stopped" if self.stopping else "Failed" if self.failure else "Succeeded"
        self.record.update(PipelineExecutionStatus=status, EndTime=now(),
                           FailureReason=self.stopping or self.failure or "")
        return self.record.snapshot()

    # -- one step ----------------------------------------------------------------------------

    def _run_step(self, node: Node) -> str:
        """Run one step in a worker thread; its final status."""
        job = Job(_job_name(self.execution_id, node.name),
                  self.state / "jobs" / self.execution_id / node.name,
                  self.context.store, self.region, self.processes)
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
        if self.stopping:  # its job was terminated, or refused to start
            self._emit(node.name, "Stopped", EndTime=now(), FailureReason=self.stopping)
            return "Stopped"
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
        if self.processes.stopped:  # some of its jobs may have been cut short (tuning trials)
            raise JobStopped("stopped while it ran: not cached")
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
    warm.prepare()
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
    try:
        execution = _Execution(
            graph, context, record, pipeline=pipeline_name, state=state,
            registry=LocalRegistry(state / "registry.db", region=region), region=region,
            on_step_event=on_step_event,
        )
        with _stopped_by_sigterm(execution):
            return execution.run(max(2, max_workers))
    finally:
        record.close()


@contextmanager
def _stopped_by_sigterm(execution: _Execution):
    """SIGTERM (what `stop` sends) stops the execution cleanly. Only the main thread may set
    a signal handler; run elsewhere, SIGTERM keeps its default and the record is settled as
    Failed by its next reader."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: execution.request_stop(STOP_REASON))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop(execution_id: str, state: Path | None = None, timeout: float = STOP_TIMEOUT_S) -> dict:
    """Ask the process running a local execution to stop it; the execution once it ended."""
    execution = get_execution(execution_id, state)["execution"]  # a dead run is Failed here
    status = execution["PipelineExecutionStatus"]
    if status != "Executing":
        raise EngineError(f"execution {execution_id} has already ended ({status}); "
                          "nothing to stop")
    pid = execution["RunnerPid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended just now: its record says how
    except PermissionError:
        raise EngineError(f"execution {execution_id} runs in process {pid}, which this user "
                          "may not signal") from None
    deadline = time.monotonic() + timeout
    while execution["PipelineExecutionStatus"] == "Executing":
        if time.monotonic() > deadline:
            raise EngineError(f"asked the process running execution {execution_id} (pid {pid})"
                              f" to stop; it has not stopped within {timeout:g} s")
        time.sleep(POLL_S)
        execution = get_execution(execution_id, state)["execution"]
    return execution
