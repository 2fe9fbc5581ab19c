"""Transform steps: a batch transform job run with the model's own serving handlers.

As SageMaker does, every object under the input prefix is split into lines (each line is
one CSV record: a quote never carries a field onto the next line), the lines are sent in
mini-batches of at most MaxPayloadInMB to the model's `/invocations` contract (here
`mlops_local.endpoint.server.Endpoint`, the local endpoint's code), and the answers are
written to `<S3OutputPath>/<input key>.out`, each line joined to its input row when
DataProcessing.JoinSource is Input.

Unlike SageMaker, a refused mini-batch does not fail the job: it is split until each
refused row is alone, and every refused row goes to `<input key>.errors.jsonl` with its
line number and the handler's message (or why the line is not one CSV record). Output
lines plus error lines equal input lines, and the output is valid CSV.
The step fails only when no row scored.

MaxConcurrentTransforms is how many mini-batches are scored at once: here that many worker
processes (at most one per core), each with the model loaded, the answers kept in line order.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlops_local.endpoint.server import Endpoint
from mlops_local.engine import records
from mlops_local.engine.errors import StepFailure
from mlops_local.engine.job import Job
from mlops_local.registry import LocalRegistry, RegistryError
from mlops_local.store import StoreError

CSV = "text/csv"
MB = 1024 * 1024
DEFAULT_PAYLOAD_MB = 6  # CreateTransformJob's default MaxPayloadInMB
FIRST_MESSAGES = 3
# A row scored alone is "row 1" to the handler; its line number in the file says more.
_SINGLE_ROW = re.compile(r"^row 1(?:, |: )")


@dataclass
class FileResult:
    """One input object's outcome."""

    output: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)


def run_transform(arguments: dict, job: Job, registry: LocalRegistry) -> tuple[dict, dict]:
    """Run a resolved CreateTransformJob request; its DescribeTransformJob-shaped properties
    and the row counts (scored, bad, where the bad rows are)."""
    settings = _settings(arguments)
    model_dir = _unpack_model(describe_model(arguments.get("ModelName", ""), job), job, registry)
    scorer = Scorer(model_dir, settings)
    source = arguments["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    inputs = job.store.list(source)
    if not inputs:
        raise StepFailure(f"no input objects under {source}")
    staging = job.root / "output"
    scored, errors, error_files = 0, [], []
    for uri in inputs:
        name = _relative(uri, source)
        result = _transform_file(job.store.path(uri).read_bytes(), scorer, settings)
        _write(staging / f"{name}.out", "".join(line + "\n" for line in result.output))
        if result.errors:
            _write(staging / f"{name}.errors.jsonl",
                   "".join(json.dumps(e) + "\n" for e in result.errors))
            error_files.append(f"{settings.output}/{name}.errors.jsonl")
        scored += len(result.output)
        errors += [{"file": name, **e} for e in result.errors]
    scorer.close()
    _log(job, f"{scored} rows scored, {len(errors)} refused, from {len(inputs)} objects "
              f"({settings.concurrency} at a time)")
    if not scored:
        first = "; ".join(f"{e['file']} line {e['line']}: {e['message']}"
                          for e in errors[:FIRST_MESSAGES])
        raise StepFailure(f"no row could be scored ({len(errors)} refused); first: {first}")
    job.store.upload_dir(staging, settings.output)
    properties = {
        **arguments,
        "TransformJobName": job.name,
        "TransformJobArn": job.arn("transform-job"),
        "TransformJobStatus": "Completed",
    }
    rows = {"Scored": scored, "Bad": len(errors), "ErrorFiles": error_files,
            "FirstErrors": errors[:FIRST_MESSAGES]}
    return properties, rows


# ---------------------------------------------------------------------------- request


@dataclass(frozen=True)
class Settings:
    output: str
    payload_bytes: int
    accept: str
    join_input: bool
    concurrency: int = 1  # MaxConcurrentTransforms, at most one per core


def _settings(arguments: dict) -> Settings:
    """The request's transform settings, refusing those the local engine does not run."""
    given = arguments.get("TransformInput") or {}
    output = arguments.get("TransformOutput") or {}
    processing = arguments.get("DataProcessing") or {}
    unsupported = [
        f"{key} {value!r}" for key, value, wanted in (
            ("ContentType", given.get("ContentType"), (CSV,)),
            ("SplitType", given.get("SplitType"), ("Line",)),
            ("CompressionType", given.get("CompressionType", "None"), ("None",)),
            ("S3DataType", (given.get("DataSource") or {}).get("S3DataSource", {})
             .get("S3DataType"), ("S3Prefix",)),
            ("Accept", output.get("Accept", CSV), (CSV,)),
            ("InputFilter", processing.get("InputFilter", "$"), ("$",)),
            ("OutputFilter", processing.get("OutputFilter", "$"), ("$",)),
        ) if value not in wanted
    ]
    if unsupported:
        raise StepFailure("the local engine runs Transform on text/csv split by Line, "
                          f"uncompressed, from an S3Prefix, answering text/csv, without "
                          f"filters; this job sets {', '.join(unsupported)}")
    return Settings(
        output=output["S3OutputPath"].rstrip("/"),
        payload_bytes=int(arguments.get("MaxPayloadInMB") or DEFAULT_PAYLOAD_MB) * MB,
        accept=output.get("Accept", CSV),
        join_input=processing.get("JoinSource", "None") == "Input",
        concurrency=max(1, min(int(arguments.get("MaxConcurrentTransforms") or 1),
                               os.cpu_count() or 1)),
    )


def _relative(uri: str, source: str) -> str:
    """The object's key below the input prefix (its file name when the prefix is the object)."""
    return uri[len(source):].lstrip("/") or uri.rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------- model


def describe_model(name: str, job: Job) -> dict:
    """The model `name` as the Model step of this execution created it (DescribeModel)."""
    execution_dir = job.root.parent  # <state>/jobs/<execution>/<step>
    execution = records.get_execution(execution_dir.name, execution_dir.parent.parent)
    for step in execution["steps"].values():
        properties = step.get("Properties") or {}
        if step.get("StepType") == "Model" and properties.get("ModelName") == name:
            return properties
    raise StepFailure(f"no model named {name!r} was created in this execution")


def _unpack_model(model: dict, job: Job, registry: LocalRegistry) -> Path:
    """The model's artifact unpacked into the job's /opt/ml/model, as the container sees it."""
    container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    if container.get("ModelPackageName"):
        try:
            package = registry.describe_model_package(container["ModelPackageName"])
        except RegistryError as err:
            raise StepFailure(f"model {model['ModelName']}: {err}") from None
        model_data = package["InferenceSpecification"]["Containers"][0].get("ModelDataUrl")
    else:
        model_data = container.get("ModelDataUrl")
    if not model_data:
        raise StepFailure(f"model {model['ModelName']} has no model data")
    try:
        archive = job.store.path(model_data)
    except StoreError as err:
        raise StepFailure(f"model {model['ModelName']}: {err}") from None
    if not archive.is_file():
        raise StepFailure(f"model data of {model['ModelName']} is missing: {model_data}")
    model_dir = job.opt_ml / "model"
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir


# ---------------------------------------------------------------------------- scoring


class Scorer:
    """Scores mini-batches with the model: in this process, or in `settings.concurrency`
    worker processes (started on first use) when there is more than one batch to share."""

    def __init__(self, model_dir: Path, settings: Settings):
        self.model_dir, self.settings = model_dir, settings
        self.endpoint = Endpoint(model_dir)
        self.pool: ProcessPoolExecutor | None = None

    def score(self, batches: list[list[tuple[int, str]]]) -> list[FileResult]:
        if self.settings.concurrency == 1 or len(batches) < 2:
            return [_score_batch(batch, self.endpoint, self.settings) for batch in batches]
        if self.pool is None:
            # spawn: the engine runs steps in threads, and forking a threaded process is unsafe.
            self.pool = ProcessPoolExecutor(
                self.settings.concurrency, mp_context=multiprocessing.get_context("spawn"),
                initializer=_load_worker, initargs=(self.model_dir,))
        return list(self.pool.map(_score_in_worker, batches, [self.settings] * len(batches)))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


_WORKER: dict = {}


def _load_worker(model_dir: Path) -> None:
    _WORKER["endpoint"] = Endpoint(model_dir)


def _score_in_worker(batch: list[tuple[int, str]], settings: Settings) -> FileResult:
    return _score_batch(batch, _WORKER["endpoint"], settings)


def _score_batch(batch: list[tuple[int, str]], endpoint: Endpoint,
                 settings: Settings) -> FileResult:
    result = FileResult()
    _score(batch, endpoint, settings, result)
    return result


def _transform_file(data: bytes, scorer: Scorer, settings: Settings) -> FileResult:
    """Score one input object's lines in mini-batches; refused rows are isolated, not lost."""
    result = FileResult()
    batches: list[list[tuple[int, str]]] = [[]]
    size = 0
    for number, line in enumerate(_lines(data), start=1):
        record = len(line.encode()) + 1
        if not line.strip():
            result.errors.append(_error(number, line, "empty line"))
            continue
        problem = _not_one_record(line)
        if problem:
            result.errors.append(_error(number, line, problem))
            continue
        if record > settings.payload_bytes:
            result.errors.append(_error(
                number, line[:200], f"the row is {record} bytes, above MaxPayloadInMB"))
            continue
        if size + record > settings.payload_bytes:
            batches.append([])
            size = 0
        batches[-1].append((number, line))
        size += record
    for part in scorer.score([batch for batch in batches if batch]):
        result.output += part.output
        result.errors += part.errors
    result.errors.sort(key=lambda error: error["line"])
    return result


def _lines(data: bytes) -> list[str]:
    """The object's lines, split on newlines only (as SplitType Line does), without CR."""
    lines = [line.removesuffix("\r") for line in data.decode("utf-8", "replace").split("\n")]
    if lines[-1] == "":  # the newline that ends the last line starts no line
        lines.pop()
    return lines


def _not_one_record(line: str) -> str | None:
    """Why the line is not exactly one CSV record, or None when it is.

    Each line is checked alone so a quote cannot open a field that swallows the next lines
    of the mini-batch, and only well-formed lines reach the output, which stays valid CSV.
    """
    try:
        next(csv.reader([line], strict=True))
    except csv.Error as err:
        if str(err) == "unexpected end of data":
            return "unterminated quote: a quoted field must end on its own line"
        return f"not a CSV record: {err}"
    return None


def _score(batch: list[tuple[int, str]], endpoint: Endpoint, settings: Settings,
           result: FileResult) -> None:
    """Score rows in one request; when refused, halve the batch until each refusal is one row.

    Halving finds k bad rows among n in about k*log2(n) requests (scoring one by one would
    take n), and keeps the output in line order: the first half is scored first.
    """
    body = "".join(line + "\n" for _, line in batch).encode()
    status, payload, _ = endpoint.invoke(body, CSV, settings.accept)
    if status == 200:
        answers = payload.decode().splitlines()
        if len(answers) != len(batch):
            raise StepFailure(f"the model answered {len(answers)} lines for {len(batch)} rows; "
                              "a batch transform needs one answer per row")
        for (_, line), answer in zip(batch, answers, strict=True):
            result.output.append(f"{line},{answer}" if settings.join_input else answer)
        return
    message = json.loads(payload).get("message", payload.decode(errors="replace"))
    if status >= 500:
        raise StepFailure(f"the model failed on rows {batch[0][0]}-{batch[-1][0]}: {message}")
    if len(batch) == 1:
        number, line = batch[0]
        result.errors.append(_error(number, line, _SINGLE_ROW.sub("", message)))
        return
    middle = len(batch) // 2
    _score(batch[:middle], endpoint, settings, result)
    _score(batch[middle:], endpoint, settings, result)


def _error(number: int, line: str, message: str) -> dict:
    return {"line": number, "row": line, "message": message}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _log(job: Job, message: str) -> None:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        log.write(message + "\n")
