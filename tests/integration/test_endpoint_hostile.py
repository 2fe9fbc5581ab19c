"""The endpoint against hostile and careless clients, over raw sockets (issue 16): framing by
Content-Length only, time limits on stalled clients, the InvokeEndpoint headers, and which
failures are the client's (4xx) and which the model's (500). After every refusal the endpoint
still answers, and capture holds only the requests it answered."""

from __future__ import annotations

import http.client
import json
import socket
import textwrap
import urllib.request
import uuid

import pandas as pd
import pytest

from mlops_core.names import capture_uri
from mlops_local.endpoint.server import CUSTOM_ATTRIBUTES, INFERENCE_ID, LINGER_S, Limits
from model_deploy import gate
from tests.helpers import captured

CSV = "text/csv"
DESTINATION = capture_uri("mlops-local", "abalone", "staging", 5)
# Short enough to see a stalled client cut off, long enough for a busy machine to answer.
SHORT = Limits(header_timeout=2.0, body_timeout=2.0, idle_timeout=2.0, max_connections=2)
GUARD_S = 10  # a client gives up waiting after this: a hang fails the test instead of the run


@pytest.fixture
def row(fitted) -> bytes:
    return pd.read_csv(fitted[1]).iloc[:1, :-1].to_csv(header=False, index=False).encode()


@pytest.fixture
def server(serve):
    return serve(DESTINATION, limits=SHORT)


def raw_request(*headers: str, body: bytes = b"", method: str = "POST",
                path: str = "/invocations") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    return (head + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode() + body


def connect(server) -> socket.socket:
    return socket.create_connection(server.server_address, timeout=GUARD_S)


def answer(sock: socket.socket) -> tuple[int, http.client.HTTPResponse, bytes]:
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    return reply.status, reply, reply.read()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def still_serving(server, row: bytes, wait_s: float = GUARD_S) -> bool:
    with urllib.request.urlopen(f"{server.url}/ping", timeout=wait_s) as reply:
        pinged = reply.status == 200
    return pinged and gate.post(server.url, row, CSV, CSV)[0] == 200


def framing_cases(row: bytes) -> list:
    n = len(row)
    csv = f"Content-Type: {CSV}"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (n, row)
    refused_length = "Content-Length must be a decimal number"
    return [
        ("short body, then half-close", [csv, "Content-Length: 100"], row, 400, "ended after"),
        ("two lengths", [csv, f"Content-Length: {n}", f"Content-Length: {n + 1}"], row, 400,
         "Content-Length is given with different values"),
        *[(f"length {value}", [csv, f"Content-Length: {value}"], row, 400, refused_length)
          for value in ("-5", "abc", "44.0", "²", f"{n} ", f"+{n}")],
        ("chunked", [csv, "Transfer-Encoding: chunked"], chunked, 411,
         "chunked bodies are not supported; send Content-Length"),
        ("chunked with a length", [csv, "Transfer-Encoding: chunked", f"Content-Length: {n}"],
         chunked, 411, "chunked bodies are not supported; send Content-Length"),
        ("other transfer coding", [csv, "Transfer-Encoding: gzip", f"Content-Length: {n}"],
         row, 411, "chunked bodies are not supported; send Content-Length"),
        ("no length", [csv], row, 411, "Content-Length is required"),
    ]


def test_framing_refusals_are_4xx_json_and_nothing_is_scored_or_captured(server, row, state):
    cases = framing_cases(row)
    for name, headers, body, status, words in cases:
        with connect(server) as sock:
            sock.sendall(raw_request(*headers, body=body))
            if name.endswith("half-close"):
                sock.shutdown(socket.SHUT_WR)
            code, reply, payload = answer(sock)
            assert (code, reply.getheader("Content-Type")) == (status, "application/json"), name
            assert words in json.loads(payload)["message"], name
            assert reply.getheader("Connection") == "close", name
            assert closed_by_server(sock), name
        assert still_serving(server, row), name
    records = captured(state, DESTINATION)
    assert len(records) == len(cases)  # the good request after each case, and only those
    assert {r["captureData"]["endpointInput"]["data"] for _, r in records} == {row.decode()}


def test_exact_content_length_keeps_the_connection_for_the_next_request(server, row):
    request = raw_request(f"Content-Type: {CSV}", f"Content-Length: {len(row)}", body=row)
    with connect(server) as sock:
        sock.sendall(request + request)  # pipelined: the first body must end where it says
        # One buffered reader for both answers: a reader per answer could read the second
        # answer ahead into the first reader's buffer and lose it.
        stream = sock.makefile("rb")
        for _ in range(2):
            code = int(stream.readline().split()[1])
            headers = http.client.parse_headers(stream)
            payload = stream.read(int(headers["Content-Length"]))
            assert code == 200 and headers.get("Connection") is None
            assert len(payload.decode().splitlines()) == 1


def test_stalled_clients_are_disconnected(server, row, state):
    with connect(server) as headers_stalled, connect(server) as body_stalled:
        headers_stalled.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        body_stalled.sendall(raw_request(f"Content-Type: {CSV}", "Content-Length: 100",
                                         body=row[:10]))
        assert closed_by_server(headers_stalled)
        code, _, payload = answer(body_stalled)
        assert code == 408 and "not received within" in json.loads(payload)["message"]
        assert closed_by_server(body_stalled)
    with connect(server) as idle:
        idle.sendall(raw_request(f"Content-Type: {CSV}", f"Content-Length: {len(row)}", body=row))
        assert answer(idle)[0] == 200
        assert closed_by_server(idle)  # the kept-alive connection was idle too long
    assert still_serving(server, row)
    assert len(captured(state, DESTINATION)) == 2  # the idle client's request, then ours


def test_a_client_trickling_its_headers_is_cut_off(server, row):
    with connect(server) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nX-Slow: ")
        cut_off = False
        for _ in range(GUARD_S * 20):  # a byte every 50 ms: each within any per-read timeout
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
                break
            sock.settimeout(0.05)
            try:
                if sock.recv(1) == b"":
                    cut_off = True
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                cut_off = True
                break
        assert cut_off
    assert still_serving(server, row)


def test_more_stalled_connections_than_the_bound_do_not_stop_the_endpoint(server, row):
    rounds = 3
    sockets = [connect(server) for _ in range(rounds * SHORT.max_connections)]
    try:
        for sock in sockets:
            sock.sendall(b"POST /invocations HTTP/1.1\r\n")
        # The ping is accepted after each round of stalled connections is cut off (the header
        # timeout, then the linger on close): about 9 s, so a guard beyond that.
        assert still_serving(server, row, GUARD_S + rounds * (SHORT.header_timeout + LINGER_S))
    finally:
        for sock in sockets:
            sock.close()


def test_standard_library_refusals_are_json_too(server, row):
    with connect(server) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n")
        code, reply, payload = answer(sock)
        assert code == 431 and reply.getheader("Content-Type") == "application/json"
        assert json.loads(payload)["message"]
    assert still_serving(server, row)


def post(server, body: bytes, headers: dict) -> tuple[int, http.client.HTTPResponse, dict]:
    connection = http.client.HTTPConnection(*server.server_address, timeout=GUARD_S)
    try:
        connection.request("POST", "/invocations", body,
                           {"Content-Type": CSV, "Accept": CSV, **headers})
        reply = connection.getresponse()
        payload = reply.read()
        message = json.loads(payload) if reply.status != 200 else {}
        return reply.status, reply, message
    finally:
        connection.close()


def test_inference_id_is_captured_and_custom_attributes_are_echoed(server, row, state):
    status, reply, _ = post(server, row, {INFERENCE_ID: "order-17/a b", CUSTOM_ATTRIBUTES: "t=1"})
    assert status == 200 and reply.getheader(CUSTOM_ATTRIBUTES) == "t=1"
    assert reply.getheader(INFERENCE_ID) == "order-17/a b"
    status, reply, _ = post(server, row, {})
    assert status == 200 and reply.getheader(CUSTOM_ATTRIBUTES) is None
    generated = reply.getheader(INFERENCE_ID)
    assert str(uuid.UUID(generated)) == generated  # the endpoint's own id, answered
    (_, with_id), (_, without) = captured(state, DESTINATION)
    assert with_id["eventMetadata"]["inferenceId"] == "order-17/a b"
    assert list(with_id["eventMetadata"]) == ["eventId", "inferenceId", "inferenceTime"]
    assert without["eventMetadata"]["inferenceId"] == generated


@pytest.mark.parametrize(
    "headers, named",
    [
        ({INFERENCE_ID: "x" * 65}, INFERENCE_ID),  # the service's maximum is 64
        ({INFERENCE_ID: "tab\there"}, INFERENCE_ID),  # not printable
        ({INFERENCE_ID: "caf\u00e9"}, INFERENCE_ID),  # not ASCII
        ({CUSTOM_ATTRIBUTES: "x" * 1025}, CUSTOM_ATTRIBUTES),
        ({CUSTOM_ATTRIBUTES: "\u00e9t\u00e9"}, CUSTOM_ATTRIBUTES),
    ],
)
def test_malformed_invoke_headers_are_refused_naming_the_header(server, row, state, headers,
                                                                named):
    status, _, message = post(server, row, headers)
    assert status == 400 and named in message["message"]
    assert captured(state, DESTINATION) == []


def test_an_inference_id_sent_twice_is_refused(server, row):
    with connect(server) as sock:
        sock.sendall(raw_request(f"Content-Type: {CSV}", f"Content-Length: {len(row)}",
                                 f"{INFERENCE_ID}: a", f"{INFERENCE_ID}: b", body=row))
        code, _, payload = answer(sock)
    assert code == 400 and INFERENCE_ID in json.loads(payload)["message"]


def test_unparseable_nesting_is_the_clients_fault(server, row):
    status, _, message = post(server, b"[" * 100_000, {"Content-Type": "application/json"})
    assert status == 400 and message["message"]
    assert still_serving(server, row)


FLAKY_HANDLERS = '''
class Refused(ValueError):
    http_status = 422

def model_fn(model_dir):
    return "model"

def input_fn(body, content_type):
    if body == b"unparseable":
        raise ValueError("cannot parse")
    return body

def predict_fn(data, model):
    if data == b"refused":
        raise Refused("the handler refuses this")
    if data == b"value error":
        raise ValueError("a bug in the model that happens to be a ValueError")
    if data == b"crash":
        raise RuntimeError("the model crashed")
    return [1.5]

def output_fn(prediction, accept):
    return "".join(f"{value}\\n" for value in prediction), "text/csv"
'''


def test_model_failures_are_500_and_counted_client_faults_are_4xx(serve, tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(textwrap.dedent(FLAKY_HANDLERS))
    flaky = serve(model_dir=tmp_path)
    expected = {b"fine": 200, b"unparseable": 400, b"refused": 422, b"value error": 500,
                b"crash": 500}
    for body, status in expected.items():
        assert post(flaky, body, {})[0] == status, body
    assert flaky.endpoint.model_errors == 2


def test_limits_come_from_the_environment_and_bad_values_are_named():
    limits = Limits.from_environment({"MLOPS_ENDPOINT_BODY_TIMEOUT": "2.5",
                                      "MLOPS_ENDPOINT_MAX_CONNECTIONS": "3"})
    assert (limits.body_timeout, limits.max_connections, limits.header_timeout) == (2.5, 3, 60)
    for variable, value in [("MLOPS_ENDPOINT_IDLE_TIMEOUT", "soon"),
                            ("MLOPS_ENDPOINT_HEADER_TIMEOUT", "-1"),
                            ("MLOPS_ENDPOINT_BODY_TIMEOUT", "inf"),
                            ("MLOPS_ENDPOINT_MAX_CONNECTIONS", "2.5")]:
        with pytest.raises(ValueError, match=f"{variable} must be a positive number"):
            Limits.from_environment({variable: value})
