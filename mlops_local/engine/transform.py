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
processes (at most one per core), each with the model loaded, taking the object in chunks of
whole lines (several per worker, none above MaxPayloadInMB) and checking, batching and joining
its own lines; the chunks' answers are kept in line order.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlops_local import warm
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
CHUNKS_PER_WORKER = 8
MIN_CHUNK_BYTES = 256 * 1024  # below this an object is scored in the engine's own process
# A row scored alone is "row 1" to the handler; its line number in the file says more.
_SINGLE_ROW = re.compile(r"^row 1(?:, |: )")


@dataclass
class FileResult:
    """One input object's (or one of its chunks') outcome: the output lines as one text."""

    output: str = ""
    scored: int = 0
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
        _write(staging / f"{name}.out", result.output)
        if result.errors:
            _write(staging / f"{name}.errors.jsonl",
                   "".join(json.dumps(e) + "\n" for e in result.errors))
            error_files.append(f"{settings.output}/{name}.errors.jsonl")
        scored += result.scored
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
        concurrency=worker_count(arguments),
    )


def worker_count(arguments: dict) -> int:
    """How many worker processes score a job's mini-batches: its MaxConcurrentTransforms, at
    most one per core."""
    return max(1, min(int(arguments.get("MaxConcurrentTransforms") or 1), os.cpu_count() or 1))


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
    """Scores an object's chunks with the model: in this process when there is one chunk, else
    in `settings.concurrency` worker processes (started on first use), in chunk order."""

    def __init__(self, model_dir: Path, settings: Settings):
        self.model_dir, self.settings = model_dir, settings
        self.endpoint: Endpoint | None = None
        self.pool: ProcessPoolExecutor | None = None

    def score(self, chunks: list[tuple[int, bytes]]) -> list[FileResult]:
        if self.settings.concurrency == 1 or len(chunks) < 2:
            self.endpoint = self.endpoint or Endpoint(self.model_dir)
            return [_transform_chunk(chunk, self.endpoint, self.settings) for chunk in chunks]
        if self.pool is None:  # forked from the fork server: the libraries are imported
            self.pool = warm.process_pool(self.settings.concurrency, _load_worker,
                                          (self.model_dir,))
        return list(self.pool.map(_transform_in_worker, chunks, [self.settings] * len(chunks)))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


_WORKER: dict = {}


def _load_worker(model_dir: Path) -> None:
    _WORKER["endpoint"] = Endpoint(model_dir)


def _transform_in_worker(chunk: tuple[int, bytes], settings: Settings) -> FileResult:
    return _transform_chunk(chunk, _WORKER["endpoint"], settings)


def _transform_file(data: bytes, scorer: Scorer, settings: Settings) -> FileResult:
    """Score one input object: its chunks of whole lines, each split into mini-batches."""
    parts = scorer.score(_chunks(data, _chunk_bytes(len(data), settings)))
    return FileResult("".join(part.output for part in parts),
                      sum(part.scored for part in parts),
                      [error for part in parts for error in part.errors])


def _chunk_bytes(size: int, settings: Settings) -> int:
    """How much of an object one worker takes at a time: several chunks per worker, so that
    no worker idles while another scores the last one; one chunk when there is one worker."""
    if settings.concurrency == 1:
        return settings.payload_bytes
    share = -(-size // (settings.concurrency * CHUNKS_PER_WORKER))
    return min(settings.payload_bytes, max(MIN_CHUNK_BYTES, share))


def _chunks(data: bytes, size: int) -> list[tuple[int, bytes]]:
    """The object cut after a newline about every `size` bytes (a newline byte is never part of
    a UTF-8 character), each chunk with the number of its first line."""
    chunks, start, line = [], 0, 1
    while start < len(data):
        cut = data.find(b"\n", start + size - 1)
        end = len(data) if cut < 0 else cut + 1
        chunk = data[start:end]
        chunks.append((line, chunk))
        line += chunk.count(b"\n")
        start = end
    return chunks


def _transform_chunk(chunk: tuple[int, bytes], endpoint: Endpoint,
                     settings: Settings) -> FileResult:
    """Score a chunk's lines in mini-batches; refused rows are isolated, not lost."""
    result = FileResult()
    whole = _as_one_batch(chunk, settings)
    if whole is not None:  # the chunk is the request body as it is
        batches, bodies = [whole], [chunk[1]]
    else:
        batches = _batches(chunk, settings, result.errors)
        bodies = [None] * len(batches)
    output: list[str] = []
    for batch, body in zip(batches, bodies, strict=True):
        _score(batch, endpoint, settings, output, result.errors, body)
    result.output, result.scored = "".join(output), len(output)
    result.errors.sort(key=lambda error: error["line"])
    return result


def _batches(chunk: tuple[int, bytes], settings: Settings,
             errors: list[dict]) -> list[list[tuple[int, str]]]:
    """The chunk's numbered lines in mini-batches of at most MaxPayloadInMB, each line that
    cannot be sent (blank, not one CSV record, too long) in `errors` instead."""
    first, data = chunk
    plain = _each_line_one_record(data)
    batches: list[list[tuple[int, str]]] = [[]]
    size = 0
    for number, line in enumerate(_lines(data.decode("utf-8", "replace")), start=first):
        record = len(line.encode()) + 1
        if not line.strip():
            errors.append(_error(number, line, "empty line"))
            continue
        problem = None if plain else _not_one_record(line)
        if problem:
            errors.append(_error(number, line, problem))
            continue
        if record > settings.payload_bytes:
            errors.append(_error(
                number, line[:200], f"the row is {record} bytes, above MaxPayloadInMB"))
            continue
        if size + record > settings.payload_bytes:
            batches.append([])
            size = 0
        batches[-1].append((number, line))
        size += record
    return [batch for batch in batches if batch]


def _as_one_batch(chunk: tuple[int, bytes], settings: Settings) -> list[tuple[int, str]] | None:
    """The chunk's numbered lines when the chunk itself can be the mini-batch's body: within
    MaxPayloadInMB, UTF-8, and no quote, carriage return or blank line (which `_batches`
    would take out line by line); else None."""
    first, data = chunk
    if len(data) > settings.payload_bytes or not _each_line_one_record(data):
        return None
    try:
        lines = _lines(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return list(enumerate(lines, start=first)) if all(map(str.strip, lines)) else None


def _each_line_one_record(data: bytes) -> bool:
    """Whether every line of `data` is sure to be one CSV record: only a quote or a carriage
    return can make one line other than that."""
    return b'"' not in data and b"\r" not in data


def _lines(text: str) -> list[str]:
    """The chunk's lines, split on newlines only (as SplitType Line does), without CR."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
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
           output: list[str], errors: list[dict], body: bytes | None = None) -> None:
    """Score rows in one request (`body`, when given, is theirs already joined); when refused,
    halve the batch until each refusal is one row.

    Halving finds k bad rows among n in about k*log2(n) requests (scoring one by one would
    take n), and keeps the output in line order: the first half is scored first.
    """
    if body is None:
        body = "".join(line + "\n" for _, line in batch).encode()
    status, payload, _ = endpoint.invoke(body, CSV, settings.accept)
    if status == 200:
        answers = payload.decode().splitlines()
        if len(answers) != len(batch):
            raise StepFailure(f"the model answered {len(answers)} lines for {len(batch)} rows; "
                              "a batch transform needs one answer per row")
        if settings.join_input:
            output += [f"{line},{answer}\n" for (_, line), answer in zip(batch, answers,
                                                                         strict=True)]
        else:
            output += [answer + "\n" for answer in answers]
        return
    message = json.loads(payload).get("message", payload.decode(errors="replace"))
    if status >= 500:
        raise StepFailure(f"the model failed on rows {batch[0][0]}-{batch[-1][0]}: {message}")
    if len(batch) == 1:
        number, line = batch[0]
        errors.append(_error(number, line, _SINGLE_ROW.sub("", message)))
        return
    middle = len(batch) // 2
    _score(batch[:middle], endpoint, settings, output, errors)
    _score(batch[middle:], endpoint, settings, output, errors)


def _error(number: int, line: str, message: str) -> dict:
    return {"line": number, "row": line, "message": message}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _log(job: Job, message: str) -> None:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        log.write(message + "\n")
