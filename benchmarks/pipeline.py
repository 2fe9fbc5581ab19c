"""`mlops pipeline run` on abalone: a cold process (definition built) and a cached re-run,
beside the time the job steps themselves took, in a private state directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path

JOB_TYPES = ("Processing", "Training")


def _run(state: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlops.cli", "pipeline", "run"], check=True,
                   env={**os.environ, "MLOPS_HOME": str(state)}, capture_output=True)
    return time.perf_counter() - started


def _job_seconds(state: Path) -> float:
    """Sum of the job steps' durations in the newest execution (each a Python process)."""
    newest = max((state / "executions").glob("*.json"), key=lambda p: p.stat().st_mtime)
    steps = json.loads(newest.read_text())["steps"].values()
    return sum(
        (datetime.fromisoformat(s["EndTime"]) - datetime.fromisoformat(s["StartTime"]))
        .total_seconds()
        for s in steps if s.get("StepType") in JOB_TYPES and not s.get("CacheHitResult")
    )


def run(state: Path) -> tuple[list[dict], Path]:
    """Rows of figures, and the trained model's directory (for the endpoint benchmark)."""
    cold = _run(state)
    jobs = _job_seconds(state)
    cached = _run(state)
    rows = [
        {"benchmark": "pipeline run, cold process, definition built", "seconds": round(cold, 2),
         "job_steps_seconds": round(jobs, 2), "goal_seconds": 15},
        {"benchmark": "pipeline run again, nothing changed (all cached)",
         "seconds": round(cached, 2), "job_steps_seconds": 0, "goal_seconds": 3},
    ]
    archive = next((state / "s3").rglob("model.tar.gz"))
    model_dir = state / "bench-model"
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    for row in rows:
        print("  ".join(f"{key}={value}" for key, value in row.items()))
    return rows, model_dir
