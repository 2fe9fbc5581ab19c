"""Local endpoint: latency and throughput over HTTP beside bare `model.predict`, capture
completeness under concurrency, and throughput with one worker process beside the default
(one per core).

The endpoint runs as the background process `mlops endpoint` starts, in a private state
directory; clients keep their connections open, as SageMaker's front end does.
"""

from __future__ import annotations

import http.client
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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
REQUESTS_PER_CLIENT = 25
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


def _timings(port: int, body: bytes, count: int, model=None, frame=None):
    """Milliseconds per request over one kept-alive connection; with a model, also the
    milliseconds of a bare predict on the same rows right after each request, so that both
    see the same load on the machine."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    served, bare = [], []
    with threadpool_limits(1):  # one OpenMP thread, as in the endpoint process
        for _ in range(count):
            started = time.perf_counter()
            connection.request("POST", "/invocations", body, headers)
            reply = connection.getresponse()
            reply.read()
            served.append((time.perf_counter() - started) * 1000)
            if reply.status != 200:
                raise RuntimeError(f"endpoint answered {reply.status}")
            if model is not None:
                started = time.perf_counter()
                model.predict(frame)
                bare.append((time.perf_counter() - started) * 1000)
    connection.close()
    return served, bare


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
    with _private_state():
        model = joblib.load(Path(model_dir) / "model.joblib")
        capture = capture_uri("mlops-local", cfg.project, "bench", 1)
        endpoint = lifecycle.start("bench", model_dir, capture)
        try:
            port = endpoint["port"]
            _timings(port, one_row, 20)  # warm up
            served, bare = _timings(port, one_row, ONE_ROW_REQUESTS, model, features.iloc[:1])
            rows = [
                {
                    "benchmark": "endpoint 1-row csv, 1 client",
                    "p50_ms": round(_quantile(served, 50), 2),
                    "p99_ms": round(_quantile(served, 99), 2),
                    "bare_predict_p50_ms": round(_quantile(bare, 50), 2),
                    "bare_predict_p99_ms": round(_quantile(bare, 99), 2),
                    "overhead_p50_ms": round(
                        statistics.median(s - b for s, b in zip(served, bare, strict=True)), 2
                    ),
                }
            ]
            captured_before = _captured(capture)
            concurrent, elapsed = _concurrent(port, one_row)
            # Latency at 16 clients includes queueing for the cores; throughput is the measure.
            rows.append(
                {
                    "benchmark": f"endpoint 1-row csv, {CONCURRENT_CLIENTS} clients, "
                                 f"{endpoint['workers']} workers",
                    "p50_ms": round(_quantile(concurrent, 50), 2),
                    "p99_ms": round(_quantile(concurrent, 99), 2),
                    "requests_per_s": round(len(concurrent) / elapsed),
                    "bare_predict_per_s_one_thread": round(1000 / statistics.median(bare)),
                }
            )
            rows.append(
                {
                    "benchmark": f"endpoint capture under {CONCURRENT_CLIENTS} clients",
                    "requests_sent": len(concurrent),
                    "records_captured": _captured(capture) - captured_before,
                }
            )
            served, bare = _timings(port, batch_body, BATCH_REQUESTS, model, batch)
            rows.append(
                {
                    "benchmark": f"endpoint {BATCH_ROWS}-row csv batches",
                    "rows_per_s": round(BATCH_ROWS / (statistics.median(served) / 1000)),
                    "bare_predict_rows_per_s": round(BATCH_ROWS / (statistics.median(bare) / 1000)),
                    "p50_ms": round(statistics.median(served), 2),
                    "bare_predict_p50_ms": round(statistics.median(bare), 2),
                }
            )
        finally:
            lifecycle.stop("bench")
        with _environment("SAGEMAKER_MODEL_SERVER_WORKERS", "1"):
            single = lifecycle.start("bench", model_dir)
        try:
            _timings(single["port"], one_row, 20)
            concurrent, elapsed = _concurrent(single["port"], one_row)
            rows.append(
                {
                    "benchmark": f"endpoint 1-row csv, {CONCURRENT_CLIENTS} clients, 1 worker",
                    "p50_ms": round(_quantile(concurrent, 50), 2),
                    "p99_ms": round(_quantile(concurrent, 99), 2),
                    "requests_per_s": round(len(concurrent) / elapsed),
                }
            )
        finally:
            lifecycle.stop("bench")
    for row in rows:
        print("  ".join(f"{key}={value}" for key, value in row.items()))
    return rows


def _concurrent(port: int, body: bytes) -> tuple[list[float], float]:
    """Milliseconds of every request from CONCURRENT_CLIENTS clients at once, and the seconds
    they all took."""
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
        per_client = pool.map(
            lambda _: _timings(port, body, REQUESTS_PER_CLIENT)[0], range(CONCURRENT_CLIENTS)
        )
        timings = [t for client in per_client for t in client]
    return timings, time.perf_counter() - started


def _captured(capture_uri: str) -> int:
    folder = LocalStore().path(capture_uri)
    return sum(
        1 for path in folder.rglob("*.jsonl") for line in path.read_text().splitlines() if line
    )


if __name__ == "__main__":
    import sys

    run(Path(sys.argv[1]))  # a model directory: model.joblib, schema.json, code/inference.py
