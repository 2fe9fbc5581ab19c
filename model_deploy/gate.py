"""The staging gate: invoke a deployed endpoint and check it answers like the model should.

One gate for both targets, run as `mlops endpoint test STAGE [--target local|aws]` by people
and by the deploy pipeline's test action (`make endpoint-test TARGET=aws`). The package that
a stage serves names its held-out test split (CustomerMetadataProperties TestDataUri) and its
evaluation; the gate scores the endpoint on those rows through a small transport interface
(boto3 `sagemaker-runtime` on AWS, HTTP locally):

- CSV and JSON requests (one row, a batch, rows as lists and as objects) answer with one
  finite number per row in the requested type, the same numbers for every format;
- RMSE of the predictions on held-out rows is within `rmse_factor` (default 1.15) times the
  registered model's evaluation RMSE, or under an absolute `max_rmse`;
- p95 latency of one-row requests is under `p95_ms` (default 200 ms);
- every kind of bad input is refused (a 4xx locally; on AWS a ValidationError, or a ModelError
  whose OriginalStatusCode is 4xx) and the endpoint still answers afterwards.

Every request of the gate carries the InferenceId `mlops-gate-<uuid>`, which data capture
records: the drift check leaves these probes out of users' traffic. The one-row probes
(latency, the valid request after each refusal) cycle through the held-out rows, so the
capture does not hold one row a hundred times.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from botocore.exceptions import ClientError, ParamValidationError

from mlops_core.config import Config
from mlops_core.names import MAX_PAYLOAD_BYTES
from model_deploy.monitoring.drift_check import PROBE_PREFIX

CSV = "text/csv"
JSON = "application/json"
# In the deploy pipeline's test action the build output is a secondary input artifact.
BUILD_OUTPUT = "CODEBUILD_SRC_DIR_BuildOutput"
DEFAULT_RMSE_FACTOR = 1.15
DEFAULT_P95_MS = 200.0


class GateError(ValueError):
    """The gate cannot run (bad arguments or test data); the message names the problem."""


class Unreachable(GateError):
    """Nothing answers at the endpoint's URL."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    refused: bool  # the endpoint rejected the request as bad input


class Transport(Protocol):
    def invoke(self, body: bytes, content_type: str, accept: str,
               inference_id: str | None = None) -> Reply: ...


def probe_id() -> str:
    """The InferenceId of one of the gate's requests."""
    return f"{PROBE_PREFIX}{uuid.uuid4()}"


class Probes:
    """A transport whose every request is marked as the gate's (`probe_id`)."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def invoke(self, body: bytes, content_type: str, accept: str) -> Reply:
        return self.transport.invoke(body, content_type, accept, inference_id=probe_id())


class HttpTransport:
    """The local endpoint over HTTP: refusals are 4xx answers."""

    def __init__(self, url: str):
        self.url = url

    def invoke(self, body: bytes, content_type: str, accept: str,
               inference_id: str | None = None) -> Reply:
        status, payload = post(self.url, body, content_type, accept, inference_id=inference_id)
        return Reply(status, payload, 400 <= status < 500)


def post(url: str, body: bytes, content_type: str | None, accept: str | None, timeout=60,
         inference_id: str | None = None):
    """POST to `<url>/invocations`; returns (HTTP status, response body) for any status."""
    headers = {"Content-Type": content_type} if content_type else {}
    if accept:
        headers["Accept"] = accept
    if inference_id:
        headers["X-Amzn-SageMaker-Inference-Id"] = inference_id
    request = urllib.request.Request(f"{url}/invocations", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except urllib.error.URLError as err:
        raise Unreachable(f"cannot reach the endpoint at {url}: {err.reason}") from None


class SageMakerTransport:
    """A SageMaker endpoint through a boto3 `sagemaker-runtime` client.

    SageMaker refuses some requests itself (ValidationError, e.g. a body over 6 MB) and
    passes the container's error answers on as ModelError with the OriginalStatusCode: a 4xx
    there is the container refusing the input, a 5xx (or none) is the container failing.
    """

    def __init__(self, client, endpoint_name: str):
        self.client = client
        self.endpoint_name = endpoint_name

    def invoke(self, body: bytes, content_type: str, accept: str,
               inference_id: str | None = None) -> Reply:
        marked = {"InferenceId": inference_id} if inference_id else {}
        try:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=body, ContentType=content_type,
                Accept=accept, **marked
            )
        except ParamValidationError as err:  # botocore refuses it before sending
            return Reply(400, str(err).encode(), True)
        except ClientError as err:
            error = err.response.get("Error", {})
            code = error.get("Code")
            original = int(err.response.get("OriginalStatusCode") or 0)
            status = original or err.response.get("ResponseMetadata", {}).get(
                "HTTPStatusCode", 0)
            message = err.response.get("OriginalMessage") or error.get("Message", "")
            refused = code == "ValidationError" or (code == "ModelError"
                                                    and 400 <= original < 500)
            return Reply(int(status), f"{code}: {message}".encode(), refused)
        return Reply(200, response["Body"].read(), False)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class GateResult:
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(check) for check in self.checks]}


@dataclass(frozen=True)
class TestRows:
    """Held-out rows: raw feature cells in schema order and the labels."""

    features: list[str]
    rows: list[list[str]]
    labels: list[float]

    __test__ = False  # not a pytest test class

    def csv(self, rows: list[list[str]] | None = None) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(self.rows if rows is None else rows)
        return out.getvalue().encode()

    def json(self, as_objects: bool = False) -> bytes:
        typed = [[_typed(cell) for cell in row] for row in self.rows]
        if as_objects:
            typed = [dict(zip(self.features, row, strict=True)) for row in typed]
        return json.dumps({"instances": typed}).encode()


def _typed(cell: str):
    try:
        return float(cell)
    except ValueError:
        return cell


def parse_test_csv(text: str, limit: int | None = None) -> TestRows:
    """A test split as the preprocess step writes it: header, features, target last."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or len(header) < 2:
        raise GateError("test data has no header with features and a target")
    rows, labels = [], []
    for number, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise GateError(
                f"test data line {number}: {len(row)} columns, header has {len(header)}"
            )
        try:
            labels.append(float(row[-1]))
        except ValueError:
            raise GateError(
                f"test data line {number}: target {row[-1]!r} is not a number"
            ) from None
        rows.append(row[:-1])
        if limit and len(rows) == limit:
            break
    if not rows:
        raise GateError("test data has no rows")
    return TestRows(header[:-1], rows, labels)


def parse_predictions(reply: Reply, accept: str, count: int) -> list[float]:
    """The predictions of a 200 answer, or ValueError naming what is wrong with it."""
    if reply.status != 200:
        raise ValueError(f"status {reply.status}: {reply.body[:300]!r}")
    text = reply.body.decode("utf-8")
    if accept == CSV:
        values = [float(line) for line in text.splitlines() if line.strip()]
    else:
        document = json.loads(text)
        values = document.get("predictions") if isinstance(document, dict) else None
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise ValueError(f'expected {{"predictions": [numbers]}}, got {text[:200]!r}')
        values = [float(v) for v in values]
    if len(values) != count:
        raise ValueError(f"expected {count} predictions, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"non-finite prediction in {values[:10]}")
    return values


def bad_requests(data: TestRows) -> list[tuple[str, bytes, str, str]]:
    """(case, body, content type, accept) for every kind of input the endpoint must refuse."""
    row = data.rows[0]

    def with_cell(index: int, value: str) -> bytes:
        return data.csv([row[:index] + [value] + row[index + 1 :]])

    numeric = next(i for i, cell in enumerate(row) if isinstance(_typed(cell), float))
    categorical = next((i for i, cell in enumerate(row) if isinstance(_typed(cell), str)), None)
    one_row = data.csv([row])
    line = one_row.decode()
    cases = [
        ("empty body", b"", CSV, CSV),
        ("too few columns", data.csv([row[:-1]]), CSV, CSV),
        ("too many columns", data.csv([row + row[-1:]]), CSV, CSV),
        ("non-numeric value", with_cell(numeric, "abc"), CSV, CSV),
        ("NaN value", with_cell(numeric, "nan"), CSV, CSV),
        ("infinite value", with_cell(numeric, "inf"), CSV, CSV),
        ("malformed JSON", b'{"instances": [[', JSON, JSON),
        ("unsupported content type", one_row, "application/x-npy", CSV),
        ("unsupported accept", one_row, CSV, "application/xml"),
        ("body over 6 MB", (line * (MAX_PAYLOAD_BYTES // len(line) + 1)).encode(), CSV, CSV),
    ]
    if categorical is not None:
        cases.append(("unknown category", with_cell(categorical, "not-a-category"), CSV, CSV))
    return cases


def _timed(transport: Transport, body: bytes, content_type: str, accept: str):
    started = time.perf_counter()
    reply = transport.invoke(body, content_type, accept)
    return reply, (time.perf_counter() - started) * 1000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def _guarded(name: str, check):
    """Run one check; a failure to even run it (e.g. the endpoint unreachable) fails it."""
    try:
        return check()
    except Exception as err:  # every error becomes a failed check, the gate goes on
        return Check(name, False, f"{type(err).__name__}: {err}")


def run_checks(
    transport: Transport,
    data: TestRows,
    rmse_bound: float,
    p95_ms: float = DEFAULT_P95_MS,
    latency_requests: int = 50,
) -> GateResult:
    """Every check of the gate against one endpoint, each request marked as a probe."""
    transport = Probes(transport)
    result = GateResult()
    cases = bad_requests(data)
    # One-row probes on different held-out rows: the latency requests, then the valid
    # request after each refusal.
    singles = [data.csv([data.rows[i % len(data.rows)]])
               for i in range(latency_requests + len(cases))]
    batch_predictions: list[float] = []

    def format_check(name, body, content_type, accept, count):
        def check():
            values = parse_predictions(transport.invoke(body, content_type, accept), accept, count)
            if not batch_predictions:
                batch_predictions.extend(values)
                return Check(name, True, f"{count} predictions as {accept}")
            worst = max(abs(a - b) for a, b in zip(values, batch_predictions, strict=True))
            same = worst <= 1e-6 * max(1.0, max(abs(v) for v in values))
            return Check(name, same, f"{count} predictions as {accept}; max diff vs CSV {worst:g}")

        result.checks.append(_guarded(name, check))

    count = len(data.rows)
    format_check("csv batch -> csv", data.csv(), CSV, CSV, count)
    format_check("json lists -> json", data.json(), JSON, JSON, count)
    format_check("json objects -> json", data.json(as_objects=True), JSON, JSON, count)
    format_check("csv batch -> json", data.csv(), CSV, JSON, count)
    result.checks.append(_guarded("rmse", lambda: _rmse_check(batch_predictions, data, rmse_bound)))
    latency = singles[:latency_requests]
    result.checks.append(
        _guarded("p95 latency", lambda: _latency_check(transport, latency, p95_ms))
    )
    for (case, body, content_type, accept), valid in zip(cases, singles[latency_requests:],
                                                          strict=True):
        name = f"refuses {case}"
        check = partial(_refusal_check, transport, name, body, content_type, accept, valid)
        result.checks.append(_guarded(name, check))
    return result


def _rmse_check(predictions: list[float], data: TestRows, bound: float) -> Check:
    if not predictions:
        return Check("rmse", False, "no predictions to score (the CSV batch check failed)")
    errors = [(p - y) ** 2 for p, y in zip(predictions, data.labels, strict=True)]
    rmse = math.sqrt(sum(errors) / len(errors))
    return Check("rmse", rmse <= bound, f"rmse {rmse:.4f} on {len(errors)} rows, bound {bound:.4f}")


def _latency_check(transport: Transport, bodies: list[bytes], bound_ms: float) -> Check:
    latencies, requests = [], len(bodies)
    for body in bodies:
        reply, elapsed = _timed(transport, body, CSV, CSV)
        parse_predictions(reply, CSV, 1)
        latencies.append(elapsed)
    p50, p95 = _percentile(latencies, 50), _percentile(latencies, 95)
    detail = (
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms over {requests} one-row requests, bound {bound_ms}"
    )
    return Check("p95 latency", p95 <= bound_ms, detail)


def _refusal_check(transport, name, body, content_type, accept, valid: bytes) -> Check:
    reply = transport.invoke(body, content_type, accept)
    message = reply.body[:200].decode("utf-8", "replace")
    after = transport.invoke(valid, CSV, CSV)
    still_serving = after.status == 200
    passed = reply.refused and still_serving
    detail = f"status {reply.status}: {message}; valid request afterwards: status {after.status}"
    return Check(name, passed, detail)


def rmse_bound(
    max_rmse: float | None, reference_rmse: float | None, factor: float = DEFAULT_RMSE_FACTOR
) -> float:
    """An absolute cap if given, else `factor` times the model's evaluation RMSE."""
    if max_rmse is not None:
        return max_rmse
    if reference_rmse is None:
        raise GateError("no RMSE bound: give max_rmse or the model's evaluation RMSE")
    return factor * reference_rmse


def evaluation_rmse(evaluation: dict) -> float:
    """The RMSE of an evaluation report in ModelMetrics `regression_metrics` form."""
    try:
        return float(evaluation["regression_metrics"]["rmse"]["value"])
    except (KeyError, TypeError, ValueError):
        raise GateError("evaluation report has no regression_metrics.rmse.value") from None


def run(package: dict, transport: Transport, read, *, rows: int = 1000,
        max_rmse: float | None = None, p95_ms: float = DEFAULT_P95_MS) -> GateResult:
    """Gate the endpoint behind `transport` on the rows `package` was tested on.

    `read(uri) -> bytes` reads the package's s3:// URIs (S3, or the local store)."""
    arn = package.get("ModelPackageArn", "?")
    try:
        test_uri = package["CustomerMetadataProperties"]["TestDataUri"]
        evaluation_uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    except KeyError as missing:
        raise GateError(f"model package {arn} does not name its {missing}") from None
    data = parse_test_csv(read(test_uri).decode("utf-8"), rows)
    reference = evaluation_rmse(json.loads(read(evaluation_uri)))
    return run_checks(transport, data, rmse_bound(max_rmse, reference), p95_ms)


def built_package_arn(stage: str) -> str:
    """The package the deploy build chose for `stage` (its `<stage>-config.json`)."""
    from model_deploy.build import BUILD_DIR

    folder = Path(os.environ.get(BUILD_OUTPUT, BUILD_DIR))
    path = folder / f"{stage}-config.json"
    if not path.is_file():
        raise GateError(f"{path} not found: the deploy build step writes it")
    return json.loads(path.read_text())["Parameters"]["ModelPackageArn"]


def run_aws(config: Config, stage: str, **options) -> tuple[dict, GateResult]:
    """The gate against the stage's SageMaker endpoint, on the package the deploy build chose."""
    import boto3  # the AWS target is the only place real clients are made

    s3 = boto3.client("s3")

    def read(uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    package = boto3.client("sagemaker").describe_model_package(
        ModelPackageName=built_package_arn(stage))
    transport = SageMakerTransport(boto3.client("sagemaker-runtime"), config.endpoint_name(stage))
    return package, run(package, transport, read, **options)
