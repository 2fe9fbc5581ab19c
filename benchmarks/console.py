"""How fast the console's pages answer with 50 versions in the registry and 100 executions.

Both are written through the real registry and execution-record code into a temporary
MLOPS_HOME (each version with its evaluation report, each execution with seven steps and the
RegisterModel step that names its package), then each page is fetched over HTTP.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

from mlops_core import config

VERSIONS, EXECUTIONS, REPEATS = 50, 100, 7
GOAL_MS = 200
STEPS = ("ValidateAndPreprocess", "DataQualityBaseline", "Train", "Evaluate", "CheckMetric",
         "MetricAboveThreshold", "RegisterModel")


def fill(cfg: config.Config) -> str:
    """The state: versions and executions; returns one execution id."""
    from mlops_local.engine import records
    from mlops_local.registry import LocalRegistry
    from mlops_local.store import LocalStore

    registry, store = LocalRegistry(), LocalStore()
    arns = []
    for version in range(1, VERSIONS + 1):
        uri = f"s3://{cfg.local['bucket']}/bench/v{version}/evaluation.json"
        store.put_bytes(uri, json.dumps({"regression_metrics": {
            cfg.metric: {"value": 2.2 + version / 1000, "standard_deviation": 0.1}}}).encode())
        arns.append(registry.create_model_package(
            ModelPackageGroupName=cfg.model_package_group,
            ModelMetrics={"ModelQuality": {"Statistics": {"S3Uri": uri}}},
        )["ModelPackageArn"])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(EXECUTIONS):
        execution_id = f"{start + timedelta(hours=index):%Y%m%dT%H%M%S}000-bench{index:02d}"
        record = records.ExecutionRecord(records.executions_dir() / f"{execution_id}.json", {
            "ExecutionId": execution_id, "PipelineName": cfg.pipeline_name,
            "PipelineExecutionStatus": "Executing", "StartTime": records.now(),
            "Parameters": []})
        for step in STEPS:
            properties = ({"ModelPackageArn": arns[index % VERSIONS]}
                          if step == "RegisterModel" else {})
            record.step(step, StepStatus="Succeeded", StepType="Processing",
                        StartTime=records.now(), EndTime=records.now(), Properties=properties)
        record.update(PipelineExecutionStatus="Succeeded", EndTime=records.now())
        record.close()
    return execution_id


def run() -> None:
    from mlops.console import server

    with tempfile.TemporaryDirectory(prefix="mlops-bench-console-") as home:
        os.environ["MLOPS_HOME"] = home
        cfg = config.load()
        execution_id = fill(cfg)
        httpd = server.make_server(0, cfg)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            for path in ("/registry", f"/registry/{VERSIONS // 2}", "/executions",
                         f"/executions/{execution_id}", "/deployments", "/monitoring"):
                times = []
                with contextlib.redirect_stderr(io.StringIO()):  # the console's request log
                    for _ in range(REPEATS):
                        begin = time.perf_counter()
                        with urllib.request.urlopen(base + path) as reply:
                            reply.read()
                        times.append((time.perf_counter() - begin) * 1000)
                print(f"GET {path:<42} median {statistics.median(times):6.1f} ms "
                      f"(goal < {GOAL_MS} ms; {VERSIONS} versions, {EXECUTIONS} executions)")
        finally:
            httpd.shutdown()
            httpd.server_close()
            os.environ.pop("MLOPS_HOME")


if __name__ == "__main__":
    run()
