"""A stage's earlier monitoring runs, read from the files each run wrote under its prefix.

One layout for both engines: a data-quality run's outputs under `<prefix>/<run>/`
(`drift_metrics.json`, `report.html`), a model-quality run's under
`<prefix>/model-quality/<run>/` (`model_quality.json`). `<run>` is the local run's timestamp
or the cloud pipeline's execution id. The source is a `drift_check.DirectorySource` or
`S3Source` over the prefix: `keys(suffix)` lists, `read(key)` reads, `name` is its URI.

Standard library only: the Processing job runs it beside drift_check.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

DRIFT_METRICS, MODEL_QUALITY, REPORT = "drift_metrics.json", "model_quality.json", "report.html"
MODEL_QUALITY_FOLDER = "model-quality"
STAMP = "%Y%m%dT%H%M%S%fZ"  # the local run's folder name


def iso_time(text: str) -> datetime:
    """An ISO 8601 time, UTC when it names no zone; ValueError if it is none."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_history(source) -> list[dict]:
    """The runs under the source's prefix, newest first: kind ("data quality" or "model
    quality"), time, verdict, window, report_path (the URI of the run's report.html, or of its
    model_quality.json; None if the report is missing), uri (the same, always set),
    relative_path (under the prefix) and summary (rows checked and refused share, or rmse, mae
    and r2). A run still being written, or that left no readable summary, is left out."""
    prefix = source.name.rstrip("/")
    keys = set(source.keys(".json")) | set(source.keys(".html"))
    runs = []
    for key in sorted(keys):
        kind = _kind(key)
        if kind is None:
            continue
        try:
            runs.append(_entry(kind, json.loads(source.read(key)), key, keys, prefix))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a run that left no readable summary is not part of the history
    return sorted(runs, key=lambda run: iso_time(run["time"]), reverse=True)


def _kind(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) == 2 and parts[1] == DRIFT_METRICS:
        kind, run = "data quality", parts[0]
    elif len(parts) == 3 and parts[0] == MODEL_QUALITY_FOLDER and parts[2] == MODEL_QUALITY:
        kind, run = "model quality", parts[1]
    else:
        return None
    return None if run.endswith(".partial") else kind  # a local run's outputs being copied


def _entry(kind: str, document: dict, key: str, keys: set[str], prefix: str) -> dict:
    folder = key.rpartition("/")[0]
    stamp = folder.rpartition("/")[2]  # runs written before summaries carried their time
    moment = (iso_time(document["time"]) if document.get("time")
              else datetime.strptime(stamp, STAMP).replace(tzinfo=UTC))
    counts = document["records"]
    if kind == "data quality":
        report = f"{folder}/{REPORT}"
        sent = counts["rows"] + counts["refused_rows"]
        summary = {"rows_checked": counts["rows_checked"], "refused_rows": counts["refused_rows"],
                   "refused_share": counts["refused_rows"] / sent if sent else 0.0}
    else:
        report = key
        metrics, tests = document["metrics"], document["test_metrics"]
        summary = {"rows_compared": counts["rows_compared"], "rmse": metrics["rmse"],
                   "mae": metrics["mae"], "r2": metrics["r2"], "test_rmse": tests["rmse"],
                   "rmse_threshold": document["rmse_threshold"]}
    window = document.get("window") or {}
    uri = f"{prefix}/{report}"
    return {"kind": kind, "time": moment.astimezone(UTC).isoformat(),
            "verdict": document["verdict"],
            "window": {"start": window.get("start"), "end": window.get("end")},
            "report_path": uri if report in keys else None, "uri": uri,
            "relative_path": report, "summary": summary}
