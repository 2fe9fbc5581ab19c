"""The background endpoint as the container runs it: a parent process and two pre-forked
worker processes on one socket, over real HTTP. Every answered request is captured exactly
once, a worker killed mid-traffic is replaced and leaves valid capture files, and SIGTERM
lets a request in flight finish."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from mlops_core.names import capture_uri
from mlops_local.endpoint import lifecycle
from mlops_local.endpoint.server import INFERENCE_ID
from tests.helpers import captured

CSV = "text/csv"
DESTINATION = capture_uri("mlops-local", "abalone", "staging", 7)
CLIENTS, REQUESTS = 6, 25
GUARD_S = 10

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")


@pytest.fixture
def endpoint(fitted, state, monkeypatch):
    """A background endpoint with two workers; stopped after the test."""
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "2")
    record = lifecycle.start("staging", fitted[0], DESTINATION)
    yield record
    if (state / "endpoints" / "staging.json").exists():
        lifecycle.stop("staging")


@pytest.fixture
def rows(fitted) -> list[bytes]:
    frame = pd.read_csv(fitted[1]).iloc[:CLIENTS, :-1]
    return [frame.iloc[[i]].to_csv(header=False, index=False).encode() for i in range(CLIENTS)]


def workers(parent: int) -> set[int]:
    return {int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()}


def client(port: int, body: bytes, ids: list[str], answered: list, lost: list, progress=None):
    """Sends one request per id over a kept-alive connection, reconnecting after a failure."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD_S)
    for inference_id in ids:
        try:
            connection.request("POST", "/invocations", body,
                               {"Content-Type": CSV, "Accept": CSV, INFERENCE_ID: inference_id})
            reply = connection.getresponse()
            reply.read()
        except (ConnectionError, http.client.HTTPException):
            lost.append(inference_id)  # in flight on a killed worker
            connection.close()
            continue
        assert reply.status == 200
        answered.append(inference_id)
        if progress is not None:
            progress.release()
    connection.close()


def test_concurrent_requests_on_two_workers_are_each_captured_once(endpoint, state, rows):
    parent = endpoint["pid"]
    assert len(workers(parent)) == endpoint["workers"] == 2
    answered, lost = [], []
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [
            pool.submit(client, endpoint["port"], rows[c],
                        [f"c{c}-{r}" for r in range(REQUESTS)], answered, lost)
            for c in range(CLIENTS)
        ]
        for future in futures:
            future.result()
    assert lost == [] and len(answered) == CLIENTS * REQUESTS
    records = captured(state, DESTINATION)
    assert sorted(r["eventMetadata"]["inferenceId"] for _, r in records) == sorted(answered)
    for path, record in records:
        client_number = int(record["eventMetadata"]["inferenceId"][1:].split("-")[0])
        assert record["captureData"]["endpointInput"]["data"] == rows[client_number].decode()
        assert any(f"-{pid}-" in path.name for pid in workers(parent)), path.name


def test_a_killed_worker_is_replaced_and_leaves_valid_capture(endpoint, state, rows):
    parent = endpoint["pid"]
    before = workers(parent)
    answered, lost = [], []
    progress = threading.Semaphore(0)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [
            pool.submit(client, endpoint["port"], rows[c],
                        [f"c{c}-{r}" for r in range(REQUESTS)], answered, lost, progress)
            for c in range(CLIENTS)
        ]
        for _ in range(CLIENTS * 3):  # traffic is flowing
            assert progress.acquire(timeout=GUARD_S)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        for future in futures:
            future.result()
    for _ in range(GUARD_S * 20):  # bounded: the parent notices within a second
        now = workers(parent)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    assert len(now) == 2 and victim not in now
    records = captured(state, DESTINATION)  # every line of every file parses
    ids = [r["eventMetadata"]["inferenceId"] for _, r in records]
    assert len(ids) == len(set(ids))  # nothing captured twice
    assert set(answered) <= set(ids) <= set(answered) | set(lost)
    assert len(answered) + len(lost) == CLIENTS * REQUESTS
    answered.clear()
    client(endpoint["port"], rows[0], ["after-0", "after-1"], answered, lost)
    assert answered == ["after-0", "after-1"]


def test_sigterm_lets_the_request_in_flight_finish(endpoint, state, rows):
    parent, port = endpoint["pid"], endpoint["port"]
    old_workers = workers(parent)
    body = rows[0]
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD_S) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body[:5])
        )
        interim = b""
        while b"\r\n\r\n" not in interim:  # a worker has the request: it asked for the body
            byte = sock.recv(1)
            assert byte, f"the endpoint closed the connection after {interim!r}"
            interim += byte
        assert interim.startswith(b"HTTP/1.1 100")
        stopping = threading.Thread(target=lifecycle.stop, args=("staging",))
        stopping.start()
        refused = False
        for _ in range(GUARD_S * 20):  # bounded: until no worker accepts any more
            try:
                socket.create_connection(("127.0.0.1", port), timeout=GUARD_S).close()
            except (ConnectionRefusedError, ConnectionResetError):  # reset: while closing
                refused = True
                break
            time.sleep(0.05)
        assert refused
        sock.sendall(body[5:])
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        assert reply.status == 200 and len(reply.read().decode().splitlines()) == 1
    stopping.join(GUARD_S * 2)
    assert not stopping.is_alive() and not lifecycle._alive(parent)
    assert not any(Path(f"/proc/{pid}").exists() for pid in old_workers)
    assert len(captured(state, DESTINATION)) == 1


def test_a_model_that_does_not_load_stops_the_endpoint_with_its_message(fitted, state, tmp_path,
                                                                        monkeypatch):
    broken = tmp_path / "model"
    shutil.copytree(fitted[0], broken)
    (broken / "code" / "inference.py").unlink()
    with pytest.raises(lifecycle.EndpointError, match="exited with code 2.*no serving code at"):
        lifecycle.start("staging", broken)
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "many")
    with pytest.raises(lifecycle.EndpointError, match="SAGEMAKER_MODEL_SERVER_WORKERS must be"):
        lifecycle.start("staging", fitted[0])
    assert not (state / "endpoints" / "staging.json").exists()
