"""`mlops pipeline run` on abalone: a cold process that builds the definition, one that reuses
a built definition, and a cached re-run, each in a private state directory, beside the time
the job steps themselves took and where the rest went (the CLI before the engine starts: its
imports, the definition's build or check; the engine; the CLI after it: summary and exit)."""

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
GOAL_S = 8


def _cli(state: Path, *command: str) -> float:
    started = time.time()
    subprocess.run([sys.executable, "-m", "mlops.cli", "pipeline", *command], check=True,
                   env={**os.environ, "MLOPS_HOME": str(state)}, capture_output=True)
    return time.time() - started


def _breakdown(state: Path, started: float, seconds: float) -> dict:
    """Where the newest execution's run went: the job steps' own durations (each a Python
    process), the engine's span, and the CLI's time before and after it."""
    newest = max((state / "executions").glob("*.json"), key=lambda p: p.stat().st_mtime)
    record = json.loads(newest.read_text())
    begin, end = (datetime.fromisoformat(record["execution"][k]).timestamp()
                  for k in ("StartTime", "EndTime"))
    steps = {name: (datetime.fromisoformat(s["EndTime"])
                    - datetime.fromisoformat(s["StartTime"])).total_seconds()
             for name, s in record["steps"].items()
             if s.get("StepType") in JOB_TYPES and not s.get("CacheHitResult")}
    return {"cli_before_engine_seconds": round(begin - started, 2),
            "engine_seconds": round(end - begin, 2),
            "cli_after_engine_seconds": round(started + seconds - end, 2),
            "job_steps_seconds": round(sum(steps.values()), 2),
            "steps": ",".join(f"{name}={value:.2f}" for name, value in steps.items()) or "-"}


def _timed_run(state: Path) -> dict:
    started = time.time()
    seconds = _cli(state, "run")
    return {"seconds": round(seconds, 2), **_breakdown(state, started, seconds)}


def run(state: Path) -> tuple[list[dict], Path]:
    """Rows of figures, and the trained model's directory (for the endpoint benchmark)."""
    cold = _timed_run(state)
    cached = _timed_run(state)
    reused = state / "definition-reused"
    _cli(reused, "definition")
    rows = [
        {"benchmark": "pipeline run, cold process, definition built", **cold,
         "goal_seconds": GOAL_S},
        {"benchmark": "pipeline run, cold process, definition already built", **_timed_run(reused),
         "goal_seconds": GOAL_S},
        {"benchmark": "pipeline run again, nothing changed (all cached)", **cached,
         "goal_seconds": 3},
    ]
    archive = next((state / "s3").rglob("model.tar.gz"))
    model_dir = state / "bench-model"
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    for row in rows:
        print("  ".join(f"{key}={value}" for key, value in row.items()))
    return rows, model_dir
