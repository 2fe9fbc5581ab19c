"""The local endpoint over real HTTP on 127.0.0.1: contract, refusals, data capture, the
background process, and the staging gate run against it."""

from __future__ import annotations

import io
import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pandas as pd
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from mlops_core.names import capture_uri
from mlops_local.endpoint import EndpointError, invoke, lifecycle, start, status, stop
from model_deploy import gate
from tests.helpers import captured

CSV, JSON = "text/csv", "application/json"
DESTINATION = capture_uri("mlops-local", "abalone", "staging", 3)
# These gate runs check what the endpoint answers, not how fast: one stall on a busy machine
# must not fail them (the latency check itself is held to a bound of 0 ms below).
ANY_LATENCY_MS = 10_000


@pytest.fixture
def frame(fitted) -> pd.DataFrame:
    return pd.read_csv(fitted[1])


def csv_rows(frame: pd.DataFrame, n: int) -> bytes:
    return frame.iloc[:n, :-1].to_csv(header=False, index=False).encode()


def test_ping_and_every_content_type(serve, frame):
    server = serve()
    with urllib.request.urlopen(f"{server.url}/ping") as reply:
        assert reply.status == 200
    body = csv_rows(frame, 5)
    status_code, csv_answer = gate.post(server.url, body, CSV, CSV)
    assert status_code == 200
    predictions = [float(v) for v in csv_answer.decode().splitlines()]
    assert len(predictions) == 5
    lists = json.dumps({"instances": frame.iloc[:5, :-1].values.tolist()}).encode()
    objects = json.dumps({"instances": frame.iloc[:5, :-1].to_dict(orient="records")}).encode()
    for request, content_type, accept in [
        (body, CSV, JSON),
        (lists, JSON, JSON),
        (objects, JSON, None),  # no Accept: answered in the request's type
        (body, CSV, "*/*"),
    ]:
        status_code, answer = gate.post(server.url, request, content_type, accept)
        assert status_code == 200
        answered = json.loads(answer)["predictions"] if accept != "*/*" else answer.decode()
        if accept == "*/*":
            answered = [float(v) for v in answered.splitlines()]
        assert answered == pytest.approx(predictions)


def test_bad_requests_get_4xx_naming_the_problem_and_nothing_is_captured(serve, frame, state):
    server = serve(DESTINATION)
    row = [str(v) for v in frame.iloc[0, :-1]]
    line = (",".join(row) + "\n").encode()
    cases = [
        (b"", CSV, CSV, 400, "empty"),
        (",".join(row[:-1]).encode(), CSV, CSV, 400, "expected 8 columns"),
        (",".join(["M", "abc", *row[2:]]).encode(), CSV, CSV, 400, "'length'"),
        (",".join(["M", "inf", *row[2:]]).encode(), CSV, CSV, 400, "'length'"),
        (",".join(["Q", *row[1:]]).encode(), CSV, CSV, 400, "'Q' is an unknown category"),
        (b'{"instances": [', JSON, JSON, 400, "malformed JSON"),
        (",".join(row).encode(), "text/plain", CSV, 415, "text/plain"),
        (",".join(row).encode(), CSV, "application/xml", 406, "application/xml"),
        (line * (6 * 2**20 // len(line) + 1), CSV, CSV, 413, "limit"),
    ]
    for body, content_type, accept, expected_status, words in cases:
        status_code, answer = gate.post(server.url, body, content_type, accept)
        assert status_code == expected_status, answer
        assert words in json.loads(answer)["message"]
        assert gate.post(server.url, ",".join(row).encode(), CSV, CSV)[0] == 200
    records = captured(state, DESTINATION)
    assert len(records) == len(cases)  # the valid request after each bad one, and only those
    assert {record["captureData"]["endpointInput"]["data"] for _, record in records} == {
        ",".join(row)
    }


def test_refused_requests_are_counted_by_reason_and_feature(serve, frame, state, monkeypatch):
    from mlops_local.endpoint import capture

    monkeypatch.setattr(capture, "SAMPLES_PER_HOUR", 2)
    server = serve(DESTINATION)
    row = [str(v) for v in frame.iloc[0, :-1]]
    rows = [row, ["X", *row[1:]], row[:-1], ["X", *row[1:]], ["Y", *row[1:]]]
    body = "\n".join(",".join(r) for r in rows).encode()
    for _ in range(3):
        status, answer = gate.post(server.url, body, CSV, CSV)
        assert status == 400
        assert "(4 of 5 rows are bad)" in json.loads(answer)["message"]
    assert gate.post(server.url, b"", CSV, CSV)[0] == 400
    refused = [record for _, record in captured(state, DESTINATION, "refused")]
    assert captured(state, DESTINATION) == []
    assert [r["rows"] for r in refused] == [5, 5, 5, 0]
    assert refused[0]["problems"] == [
        {"reason": "unknown category", "feature": "sex", "value": "X", "rows": 2},
        {"reason": "wrong column count", "feature": None, "value": None, "rows": 1},
        {"reason": "unknown category", "feature": "sex", "value": "Y", "rows": 1}]
    assert (refused[0]["reason"], refused[0]["feature"], refused[0]["value"]) == (
        "unknown category", "sex", "X")
    assert refused[3]["reason"] == "malformed request"
    assert ["payload" in r for r in refused] == [True, True, False, False]  # a bounded sample
    assert refused[0]["payload"]["data"] == body.decode()


def test_capture_records_follow_the_contract(serve, frame, state):
    server = serve(DESTINATION)
    csv_body = csv_rows(frame, 3)
    json_body = json.dumps({"instances": frame.iloc[:2, :-1].values.tolist()}).encode()
    answers = [
        gate.post(server.url, csv_body, CSV, CSV)[1],
        gate.post(server.url, json_body, JSON, CSV)[1],
    ]
    records = captured(state, DESTINATION)
    assert len(records) == 2
    layout = re.compile(
        r".*/abalone/datacapture/staging/v3/abalone-test/AllTraffic/"
        r"\d{4}/\d{2}/\d{2}/\d{2}/[^/]+\.jsonl$"
    )
    sent = [(csv_body, CSV, "CSV"), (json_body, JSON, "JSON")]
    for (path, record), (body, content_type, encoding), answer in zip(
        records, sent, answers, strict=True
    ):
        assert layout.match(path.as_posix()), path
        assert set(record) == {"captureData", "eventMetadata", "eventVersion"}
        assert record["eventVersion"] == "0"
        assert record["captureData"]["endpointInput"] == {
            "observedContentType": content_type,
            "mode": "INPUT",
            "data": body.decode(),
            "encoding": encoding,
        }
        assert record["captureData"]["endpointOutput"] == {
            "observedContentType": CSV,
            "mode": "OUTPUT",
            "data": answer.decode(),
            "encoding": "CSV",
        }
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["eventMetadata"]["inferenceTime"]
        )
        assert len(record["eventMetadata"]["eventId"]) == 36


def test_capture_is_lossless_under_16_concurrent_clients(serve, frame, state):
    server = serve(DESTINATION)
    bodies = [csv_rows(frame.iloc[i:], 1) for i in range(16)]

    def client(i: int) -> list[int]:
        return [gate.post(server.url, bodies[i], CSV, CSV)[0] for _ in range(20)]

    with ThreadPoolExecutor(16) as pool:
        statuses = [s for result in pool.map(client, range(16)) for s in result]
    assert statuses == [200] * 320
    records = [record for _, record in captured(state, DESTINATION)]
    assert len(records) == 320
    assert len({r["eventMetadata"]["eventId"] for r in records}) == 320
    sent = sorted(b.decode() for b in bodies for _ in range(20))
    assert sorted(r["captureData"]["endpointInput"]["data"] for r in records) == sent


def test_sampling_zero_captures_nothing(serve, frame, state):
    server = serve(DESTINATION, sampling=0)
    assert gate.post(server.url, csv_rows(frame, 1), CSV, CSV)[0] == 200
    assert captured(state, DESTINATION) == []


def test_gate_passes_a_good_endpoint_and_fails_a_tight_bound(serve, fitted):
    server = serve()
    data = gate.parse_test_csv(Path(fitted[1]).read_text(), limit=200)
    transport = gate.HttpTransport(server.url)
    bound = gate.rmse_bound(None, fitted[2])
    result = gate.run_checks(transport, data, bound, ANY_LATENCY_MS, latency_requests=10)
    assert result.passed, [c for c in result.checks if not c.passed]
    names = [check.name for check in result.checks]
    assert "refuses body over 6 MB" in names and "refuses unknown category" in names
    strict = gate.run_checks(transport, data, rmse_bound(0.5), ANY_LATENCY_MS, latency_requests=10)
    assert [c.name for c in strict.checks if not c.passed] == ["rmse"]
    hurried = gate.run_checks(transport, data, bound, 0.0, latency_requests=10)
    assert [c.name for c in hurried.checks if not c.passed] == ["p95 latency"]


def test_gate_requests_are_marked_probes_on_varied_rows(serve, fitted, state):
    server = serve(DESTINATION)
    data = gate.parse_test_csv(Path(fitted[1]).read_text(), limit=200)
    result = gate.run_checks(gate.HttpTransport(server.url), data, 100.0, ANY_LATENCY_MS,
                             latency_requests=20)
    assert result.passed, [c for c in result.checks if not c.passed]
    records = [record for _, record in captured(state, DESTINATION)]
    refused = [record for _, record in captured(state, DESTINATION, "refused")]
    ids = [r["eventMetadata"]["inferenceId"] for r in records] + [
        r["inferenceId"] for r in refused]
    assert refused and all(i.startswith("mlops-gate-") for i in ids)
    assert len(set(ids)) == len(ids)
    singles = [r["captureData"]["endpointInput"]["data"] for r in records
               if r["captureData"]["endpointInput"]["data"].count("\n") == 1]
    assert len(singles) == 20 + len(gate.bad_requests(data))
    assert len(set(singles)) == len(singles)  # no held-out row probed twice


def rmse_bound(cap: float) -> float:
    return gate.rmse_bound(cap, None)


def add_model_error(stub: Stubber, original_status: int | None, message: str) -> None:
    """A ModelError as SageMaker sends it: HTTP 424, the container's answer in its fields."""
    fields = {"OriginalMessage": message}
    if original_status is not None:
        fields["OriginalStatusCode"] = original_status
    stub.add_client_error("invoke_endpoint", service_error_code="ModelError",
                          service_message="Received error from primary container",
                          http_status_code=424, modeled_fields=fields)


def test_gate_through_the_boto3_transport(fitted):
    """The AWS transport, with botocore's stubber standing in for the service only: the
    container refusing the input (a 4xx ModelError) is a refusal, the container failing
    (a 5xx ModelError, or one without its status) is not."""
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    transport = gate.SageMakerTransport(client, "abalone-staging")
    request = {"EndpointName": "abalone-staging", "Body": b"M,1", "ContentType": CSV, "Accept": CSV}
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint", {"Body": StreamingBody(io.BytesIO(b"9.5\n"), 4)}, request
        )
        add_model_error(stub, 400, "row 1: expected 8")
        add_model_error(stub, 500, "Traceback: ZeroDivisionError")
        add_model_error(stub, None, "no status")
        stub.add_client_error("invoke_endpoint", "ValidationError", "body too large", 400)
        stub.add_client_error("invoke_endpoint", "ServiceUnavailable", "busy", 503)
        assert gate.parse_predictions(transport.invoke(b"M,1", CSV, CSV), CSV, 1) == [9.5]
        model_error = transport.invoke(b"M,1", CSV, CSV)
        assert (model_error.status, model_error.refused) == (400, True)
        assert b"row 1: expected 8" in model_error.body
        crash = transport.invoke(b"M,1", CSV, CSV)
        assert (crash.status, crash.refused) == (500, False)
        assert crash.body == b"ModelError: Traceback: ZeroDivisionError"
        assert not transport.invoke(b"M,1", CSV, CSV).refused
        assert transport.invoke(b"x" * 10, CSV, CSV).refused
        unavailable = transport.invoke(b"M,1", CSV, CSV)
        assert (unavailable.status, unavailable.refused) == (503, False)
        stub.assert_no_pending_responses()


def test_the_gate_marks_its_boto3_requests_with_an_inference_id():
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    transport = gate.Probes(gate.SageMakerTransport(client, "abalone-staging"))
    with Stubber(client) as stub:
        stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(b"9.5\n"), 4)},
                          {"EndpointName": "abalone-staging", "Body": b"M,1", "ContentType": CSV,
                           "Accept": CSV, "InferenceId": ANY})
        sent = []
        client.meta.events.register("provide-client-params.sagemaker-runtime.InvokeEndpoint",
                                    lambda params, **_: sent.append(dict(params)))
        assert transport.invoke(b"M,1", CSV, CSV).status == 200
    assert sent[0]["InferenceId"].startswith("mlops-gate-")


@pytest.mark.parametrize("original_status, passed", [(400, True), (415, True), (500, False),
                                                     (503, False)])
def test_a_refusal_check_on_aws_passes_only_a_4xx_model_error(original_status, passed):
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    transport = gate.SageMakerTransport(client, "abalone-staging")
    with Stubber(client) as stub:
        add_model_error(stub, original_status, "bad row")
        stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(b"9.5\n"), 4)})
        check = gate._refusal_check(transport, "refuses NaN value", b"M,nan", CSV, CSV, b"M,1")
    assert check.passed is passed
    assert check.detail.startswith(f"status {original_status}: ModelError: bad row;")


@pytest.fixture
def staging(state):
    """Makes sure no background endpoint outlives a failing test."""
    yield "staging"
    record = state / "endpoints" / "staging.json"
    if record.exists():
        stop("staging")


def test_background_process_start_replace_stop(fitted, staging, state, frame):
    model_dir = fitted[0]
    first = start("staging", model_dir, DESTINATION, model_info={"version": 3})
    assert status("staging")["pid"] == first["pid"]
    code, answer, inference_id = invoke("staging", csv_rows(frame, 2), CSV, CSV)
    assert code == 200 and len(answer.decode().splitlines()) == 2
    assert inference_id  # the endpoint's own, answered

    second = start("staging", model_dir, DESTINATION, model_info={"version": 3})
    assert second["pid"] != first["pid"]
    assert not lifecycle._alive(first["pid"])
    record = json.loads((state / "endpoints" / "staging.json").read_text())
    assert record["url"] == second["url"] and record["model_info"] == {"version": 3}
    assert invoke("staging", csv_rows(frame, 1), CSV, CSV)[0] == 200

    stop("staging")
    assert not lifecycle._alive(second["pid"])
    assert not (state / "endpoints" / "staging.json").exists()
    assert (state / "endpoints" / "staging.stopped.json").exists()
    with pytest.raises(EndpointError, match="no local endpoint is running for stage 'staging'"):
        status("staging")
    assert len(captured(state, DESTINATION)) == 2  # both answered, one per endpoint


def test_start_refuses_a_directory_without_a_model(tmp_path, state):
    with pytest.raises(EndpointError, match="no model.joblib"):
        start("staging", tmp_path)
