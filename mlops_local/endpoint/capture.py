"""Data capture in SageMaker's JSON Lines format, written into the local store.

Layout (the same as SageMaker's under the endpoint's DestinationS3Uri):
`<destination>/<endpoint name>/AllTraffic/YYYY/MM/DD/HH/<file>.jsonl`, where the
destination is `<capture root>/v<model version>` (`mlops_core.names.capture_uri`).

Each writer (one per worker process) writes its own files, named with its pid, as SageMaker
writes one set of files per instance: no two processes ever append to the same file.

Refused requests are not captured (SageMaker captures only answered ones) but counted: the
`RefusalLog` beside each writer appends one record per refused request to
`<destination>/<endpoint name>/refused/YYYY/MM/DD/HH/<file>.jsonl` with the time, the
InferenceId, the rows of the request and its problems counted by reason, feature and value;
the first SAMPLES_PER_HOUR records of an hour (per worker) also keep the payload, truncated.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from mlops_core.names import VARIANT
from mlops_local.store import LocalStore

TEXT_ENCODINGS = {"text/csv": "CSV", "application/json": "JSON"}
REFUSED = "refused"
SAMPLES_PER_HOUR = 100
SAMPLE_BYTES = 2048
MAX_GROUPS = 20  # distinct (reason, feature, value) counted per record; the rest as "other"
VALUE_CHARS = 100


def _payload(body: bytes, content_type: str, mode: str) -> dict:
    kind = (content_type or "").split(";")[0].strip().lower()
    encoding = TEXT_ENCODINGS.get(kind)
    data = None
    if encoding:
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            encoding = None
    if encoding is None:
        encoding, data = "BASE64", base64.b64encode(body).decode("ascii")
    return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}


def record(
    request: bytes, request_type: str, response: bytes, response_type: str, when: datetime,
    inference_id: str | None = None,
) -> dict:
    """One capture record for one request and its answer; the caller's InferenceId, if it
    sent one, goes into the event metadata as SageMaker puts it."""
    metadata = {"eventId": str(uuid.uuid4())}
    if inference_id is not None:
        metadata["inferenceId"] = inference_id
    metadata["inferenceTime"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "captureData": {
            "endpointInput": _payload(request, request_type, "INPUT"),
            "endpointOutput": _payload(response, response_type, "OUTPUT"),
        },
        "eventMetadata": metadata,
        "eventVersion": "0",
    }


class HourlyLines:
    """Appends JSON lines to one file per hour under `base`; safe from many threads.

    Each record is one line written by one `os.write` on an O_APPEND descriptor (no buffer
    to flush), under a lock, so even a killed process leaves only whole lines; a new file
    starts with each hour, so a reader of a closed hour sees every record.
    """

    def __init__(self, base: Path):
        self.base = base
        self._lock = threading.Lock()
        self._hour: tuple | None = None
        self._fd: int | None = None

    def append(self, document: dict, when: datetime) -> None:
        line = json.dumps(document).encode() + b"\n"
        with self._lock:
            fd = self._fd_for(when)
            written = os.write(fd, line)
            if written < len(line):  # only when the disk is full; the rest fails loudly
                os.write(fd, line[written:])

    def _fd_for(self, when: datetime) -> int:
        hour = (when.year, when.month, when.day, when.hour)  # cheaper than strftime per line
        if hour != self._hour:
            self._close_file()
            folder = self.base / when.strftime("%Y/%m/%d/%H")
            folder.mkdir(parents=True, exist_ok=True)
            name = (f"{when.strftime('%M-%S')}-{when.microsecond // 1000:03d}"
                    f"-{os.getpid()}-{uuid.uuid4().hex[:12]}")
            self._fd = os.open(Path(folder, name + ".jsonl"),
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._hour = hour
        return self._fd

    def close(self):
        with self._lock:
            self._close_file()

    def _close_file(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._hour = None, None


class CaptureWriter(HourlyLines):
    """Appends capture records for one endpoint (`<destination>/<endpoint>/AllTraffic`)."""

    def __init__(
        self,
        destination: str,
        endpoint_name: str,
        sampling_percentage: float = 100,
        store: LocalStore | None = None,
    ):
        if not 0 <= sampling_percentage <= 100:
            raise ValueError(f"sampling percentage must be 0-100, got {sampling_percentage}")
        root = (store or LocalStore()).path(destination) / endpoint_name
        super().__init__(root / VARIANT)
        self.refusals = RefusalLog(root / REFUSED)
        self.sampling_percentage = sampling_percentage

    def capture(
        self, request: bytes, request_type: str, response: bytes, response_type: str,
        inference_id: str | None = None,
    ):
        """Record one successful request, subject to sampling."""
        if self.sampling_percentage < 100 and random.uniform(0, 100) >= self.sampling_percentage:
            return
        when = datetime.now(UTC)
        self.append(record(request, request_type, response, response_type, when, inference_id),
                    when)

    def close(self):
        super().close()
        self.refusals.close()


def problem_counts(problems) -> list[dict]:
    """A refusal's row problems counted by (reason, feature, value), most rows first; past
    MAX_GROUPS groups the rest are counted as one group of value None, reason "other"."""
    rows: dict[tuple, set] = {}
    for problem in problems:
        value = problem.value if problem.feature is not None else None
        if isinstance(value, str):
            value = value[:VALUE_CHARS]
        rows.setdefault((problem.reason, problem.feature, value), set()).add(problem.row)
    ordered = sorted(rows.items(), key=lambda item: -len(item[1]))
    groups = [{"reason": reason, "feature": feature, "value": value, "rows": len(numbers)}
              for (reason, feature, value), numbers in ordered[:MAX_GROUPS]]
    rest = set().union(*(numbers for _, numbers in ordered[MAX_GROUPS:]))
    if rest:
        groups.append({"reason": "other", "feature": None, "value": None, "rows": len(rest)})
    return groups


class RefusalLog(HourlyLines):
    """One record per refused request; the payload kept for SAMPLES_PER_HOUR of them an hour."""

    def __init__(self, base: Path):
        super().__init__(base)
        self._sampled: dict[str, int] = {}

    def refused(self, error: ValueError, request: bytes, request_type: str,
                inference_id: str | None = None) -> None:
        problems = getattr(error, "problems", None) or []
        first = problems[0] if problems else None
        when = datetime.now(UTC)
        document = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "inferenceId": inference_id,
            "reason": first.reason if first else getattr(error, "reason", "bad request"),
            "feature": first.feature if first else None,
            "value": first.value if first else None,
            "rows": int(getattr(error, "rows", 0) or 0),
            "badRows": len({p.row for p in problems}),
            "problems": problem_counts(problems),
            "message": str(error)[:SAMPLE_BYTES],
        }
        hour = when.strftime("%Y%m%d%H")
        with self._lock:
            sampled = self._sampled = {hour: self._sampled.get(hour, 0) + 1}
        if sampled[hour] <= SAMPLES_PER_HOUR:
            document["payload"] = _payload(request[:SAMPLE_BYTES], request_type, "INPUT")
            document["payloadBytes"] = len(request)
        self.append(document, when)
