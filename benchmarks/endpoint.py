"""Local endpoint: latency and throughput over HTTP beside the estimator's own predict,
capture completeness under concurrency, and throughput with one worker process beside the
default (one per core), the two measured alternately, three times each.

The endpoint runs as the background process `mlops endpoint` starts, in a private state
directory. Clients keep their connections open, as SageMaker's front end does, and send a
prepared request over a raw socket, as a load generator such as wrk does: on two cores an
HTTP library's own cost per request would be taken from the server being measured.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import joblib
import pandas as pd
from threadpoolctl import threadpool_limits

from mlops_core import config
from mlops_core.names import capture_uri
from mlops_local.endpoint import lifecycle
from mlops_local.store import LocalStore

ONE_ROW_REQUESTS = 200
CONCURRENT_CLIENTS = 16
REQUESTS_PER_CLIENT = 100
CONCURRENT_ROUNDS = 3  # of each server, alternately; the medians are reported
GOAL_P50_MS, GOAL_P50_RATIO = 1.0, 4.0
GOAL_REQUESTS_PER_S, GOAL_WORKER_RATIO = 1000, 1.6
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
BATCH_ROWS = 1000
BATCH_REQUESTS = 10


@contextmanager
def _environment(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def _private_state():
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as home:
        with _environment("MLOPS_HOME", home):
            yield Path(home)


class _Connection:
    """One kept-alive connection that sends a prepared POST and reads whole answers."""

    def __init__(self, port: int, body: bytes):
        self.request = (b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: text/csv\r\nAccept: text/csv\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body)) + body
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer, self.sent = b"", 0.0

    def send(self) -> None:
        self.sent = time.perf_counter()
        self.sock.sendall(self.request)

    def answer(self) -> float | None:
        """Milliseconds since `send` once the whole answer has arrived (after a read)."""
        self.buffer += self.sock.recv(1 << 16)
        head, found, rest = self.buffer.partition(b"\r\n\r\n")
        if not found:
            return None
        length = int(_LENGTH.search(head).group(1))
        if len(rest) < length:
            return None
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"endpoint answered {head.splitlines()[0].decode()}")
        self.buffer = rest[length:]
        return (time.perf_counter() - self.sent) * 1000

    def request_ms(self) -> float:
        self.send()
        while (elapsed := self.answer()) is None:
            pass
        return elapsed


def _timings(port: int, body: bytes, count: int, estimator=None, matrix=None
             ) -> tuple[list[float], list[float]]:
    """Milliseconds per request, one after another over one connection; with an estimator,
    also the milliseconds of its own predict on the transformed rows (one core) right after
    each request, so that both see the machine in the same state."""
    connection = _Connection(port, body)
    served, own = [], []
    with threadpool_limits(1):
        for _ in range(count):
            served.append(connection.request_ms())
            if estimator is not None:
                started = time.perf_counter()
                estimator.predict(matrix)
                own.append((time.perf_counter() - started) * 1000)
    connection.sock.close()
    return served, own


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run(model_dir: Path) -> list[dict]:
    """Benchmark the endpoint serving the model in `model_dir` (as the pipeline trained it)."""
    cfg = config.load()
    data = pd.read_csv(cfg.data_file)
    features = data[cfg.feature_names]
    one_row = features.iloc[:1].to_csv(header=False, index=False).encode()
    batch = pd.concat([features] * (BATCH_ROWS // len(features) + 1)).iloc[:BATCH_ROWS]
    batch_body = batch.to_csv(header=False, index=False).encode()
    model = joblib.load(Path(model_dir) / "model.joblib")
    features_step, estimator = model.steps[0][1], model.steps[-1][1]
    with _private_state():
        capture = capture_uri("mlops-local", cfg.project, "bench", 1)
        endpoint = lifecycle.start("bench", model_dir, capture)
        with _environment("SAGEMAKER_MODEL_SERVER_WORKERS", "1"):
            # the same server: capturing too, into its own prefix
            single = lifecycle.start("bench-one-worker", model_dir,
                                     capture_uri("mlops-local", cfg.project, "bench-one", 1))
        try:
            port = endpoint["port"]
            _timings(port, one_row, 50)  # warm up
            _timings(single["port"], one_row, 50)
            served, own = _timings(port, one_row, ONE_ROW_REQUESTS, estimator,
                                   features_step.transform(features.iloc[:1]))
            p50, own_p50 = _quantile(served, 50), _quantile(own, 50)
            rows = [{
                "benchmark": "endpoint 1-row csv, 1 client",
                "p50_ms": round(p50, 3),
                "p99_ms": round(_quantile(served, 99), 3),
                "estimator_own_predict_p50_ms": round(own_p50, 3),
                "ratio": round(p50 / own_p50, 2),
                "goal": f"p50 <= {GOAL_P50_MS} ms and ratio <= {GOAL_P50_RATIO}",
            }]
            captured_before = _captured(capture)
            many, one = [], []
            for _ in range(CONCURRENT_ROUNDS):  # alternately, so both see the machine alike
                many.append(_concurrent(port, one_row))
                one.append(_concurrent(single["port"], one_row))
            for workers, runs in ((endpoint["workers"], many), (1, one)):
                timings = [ms for run_timings, _ in runs for ms in run_timings]
                rows.append({
                    "benchmark": f"endpoint 1-row csv, {CONCURRENT_CLIENTS} clients, "
                                 f"{workers} worker{'s' * (workers > 1)}",
                    "p50_ms": round(_quantile(timings, 50), 2),
                    "p99_ms": round(_quantile(timings, 99), 2),
                    "requests_per_s": round(_median_rate(runs)),
                })
            rows.append({
                "benchmark": f"endpoint capture under {CONCURRENT_CLIENTS} clients",
                "requests_answered_200": sum(len(run_timings) for run_timings, _ in many),
                "records_captured": _captured(capture) - captured_before,
            })
            served, own = _timings(port, batch_body, BATCH_REQUESTS, estimator,
                                   features_step.transform(batch))
            rows.append({
                "benchmark": f"endpoint {BATCH_ROWS}-row csv batches",
                "rows_per_s": round(BATCH_ROWS / (statistics.median(served) / 1000)),
                "estimator_own_rows_per_s": round(BATCH_ROWS / (statistics.median(own) / 1000)),
                "p50_ms": round(statistics.median(served), 2),
            })
        finally:
            lifecycle.stop("bench")
            lifecycle.stop("bench-one-worker")
    rows.append({
        "benchmark": f"endpoint {CONCURRENT_CLIENTS} clients, {endpoint['workers']} workers "
                     "against 1",
        "ratio": round(_median_rate(many) / _median_rate(one), 2),
        "goal": f">= {GOAL_REQUESTS_PER_S} requests/s and ratio >= {GOAL_WORKER_RATIO}",
    })
    for row in rows:
        print("  ".join(f"{key}={value}" for key, value in row.items()))
    return rows


def _median_rate(runs: list[tuple[list[float], float]]) -> float:
    return statistics.median(len(timings) / seconds for timings, seconds in runs)


def _concurrent(port: int, body: bytes) -> tuple[list[float], float]:
    """Milliseconds of every request from CONCURRENT_CLIENTS connections kept busy at once
    (each sends its next request as its answer arrives), and the seconds they all took."""
    selector = selectors.DefaultSelector()
    left = {}
    timings: list[float] = []
    started = time.perf_counter()
    for _ in range(CONCURRENT_CLIENTS):
        connection = _Connection(port, body)
        left[connection] = REQUESTS_PER_CLIENT
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        connection.send()
    while left:
        for key, _ in selector.select():
            connection = key.data
            elapsed = connection.answer()
            if elapsed is None:
                continue
            timings.append(elapsed)
            left[connection] -= 1
            if left[connection]:
                connection.send()
            else:
                del left[connection]
                selector.unregister(connection.sock)
                connection.sock.close()
    selector.close()
    return timings, time.perf_counter() - started


def _captured(capture_uri: str) -> int:
    folder = LocalStore().path(capture_uri)
    return sum(
        1 for path in folder.rglob("*.jsonl") for line in path.read_text().splitlines() if line
    )


if __name__ == "__main__":
    import sys

    run(Path(sys.argv[1]))  # a model directory: model.joblib, schema.json, code/inference.py
