"""How long the drift check takes on 100,000 captured requests, beside pandas merely reading them.

The records are abalone rows drawn with replacement, written as SageMaker data capture over
four hour folders; the baseline is that of a 70% sample, as the training pipeline makes it.
"""

from __future__ import annotations

import gc
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_core import config
from model_build.scripts import baseline
from model_deploy.monitoring import drift_check

RECORDS = 100_000
REPEATS = 3  # each figure is the median of three runs
HOURS = 4


def write_capture(root: Path, rows: pd.DataFrame, start: datetime) -> list[Path]:
    files = []
    seconds = np.random.default_rng(0).uniform(0, HOURS * 3600, len(rows))
    bodies = [",".join(map(str, row)) for row in rows.itertuples(index=False)]
    by_hour: dict[int, list[str]] = {}
    for body, offset in sorted(zip(bodies, seconds, strict=True), key=lambda pair: pair[1]):
        when = start + timedelta(seconds=float(offset))
        by_hour.setdefault(int(offset // 3600), []).append(json.dumps({
            "captureData": {
                "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                                  "data": body, "encoding": "CSV"},
                "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT",
                                   "data": "9.8", "encoding": "CSV"},
            },
            "eventMetadata": {"eventId": str(uuid.uuid4()),
                              "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"},
            "eventVersion": "0",
        }))
    for hour, lines in by_hour.items():
        folder = root / "abalone-bench" / "AllTraffic" / (start + timedelta(hours=hour)).strftime(
            "%Y/%m/%d/%H")
        folder.mkdir(parents=True, exist_ok=True)
        files.append(folder / "capture.jsonl")
        files[-1].write_text("\n".join(lines) + "\n")
    return files


def timed(action) -> tuple[float, object]:
    began = time.perf_counter()
    outcome = action()
    return time.perf_counter() - began, outcome


def run() -> list[dict]:
    cfg = config.load()
    data = pd.read_csv(cfg.data_file)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        data.sample(frac=0.7, random_state=cfg.seed).to_csv(work / "train.csv", index=False)
        (work / "schema.json").write_text(json.dumps(cfg.schema()))
        baseline.run(work / "train.csv", work / "schema.json", work / "baseline")
        traffic = data[cfg.feature_names].sample(RECORDS, replace=True, random_state=1)
        files = write_capture(work / "v1", traffic, start)
        # This process holds the objects of the sections before (the SDK among them), which a
        # drift check job does not: keep them out of the garbage collector's passes.
        gc.freeze()
        checks, reads = [], []
        for _ in range(REPEATS):  # alternating, so that neither runs on a colder process
            check_s, result = timed(lambda: drift_check.run(
                drift_check.DirectorySource(work / "v1"), work / "baseline" / "statistics.json",
                work / "baseline" / "constraints.json", work / "out", model_version=1))
            read_s, frame = timed(lambda: pd.concat(
                [pd.read_json(f, lines=True) for f in files], ignore_index=True))
            checks.append(check_s)
            reads.append(read_s)
        check_s, read_s = statistics.median(checks), statistics.median(reads)
    rows = [
        {"step": "drift check (read, parse, compare, write report)", "records": RECORDS,
         "seconds": round(check_s, 2), "verdict": result.verdict},
        {"step": "pandas read_json(lines=True) of the same files", "records": len(frame),
         "seconds": round(read_s, 2), "verdict": "-"},
    ]
    print(format_rows(rows))
    print(f"drift check / read_json = {check_s / read_s:.2f} (goal: below 1; medians of "
          f"{REPEATS} alternating runs)")
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'step':<52}{'records':>9}{'seconds':>9}  verdict"]
    lines += [f"{r['step']:<52}{r['records']:>9}{r['seconds']:>9}  {r['verdict']}" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    run()
