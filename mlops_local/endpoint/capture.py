"""Data capture in SageMaker's JSON Lines format, written into the local store.

Layout (the same as SageMaker's under the endpoint's DestinationS3Uri):
`<destination>/<endpoint name>/AllTraffic/YYYY/MM/DD/HH/<file>.jsonl`, where the
destination is `<capture root>/v<model version>` (`mlops_core.names.capture_uri`).
"""

from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from mlops_core.names import VARIANT
from mlops_local.store import LocalStore

TEXT_ENCODINGS = {"text/csv": "CSV", "application/json": "JSON"}


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
    request: bytes, request_type: str, response: bytes, response_type: str, when: datetime
) -> dict:
    """One capture record for one request and its answer."""
    return {
        "captureData": {
            "endpointInput": _payload(request, request_type, "INPUT"),
            "endpointOutput": _payload(response, response_type, "OUTPUT"),
        },
        "eventMetadata": {
            "eventId": str(uuid.uuid4()),
            "inferenceTime": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        },
        "eventVersion": "0",
    }


class CaptureWriter:
    """Appends records for one endpoint; safe to call from many request threads.

    Each record is written and flushed whole under a lock, and a new file starts with each
    hour, so a reader of a closed hour sees every record and never a partial line.
    """

    def __init__(
        self,
        destination: str,
        endpoint_name: str,
        sampling_percentage: float = 100,
        store: LocalStore | None = None,
    ):
        if not 0 <= sampling_percentage <= 100:
            raise ValueError(f"sampling percentage must be 0-100, got {sampling_percentage}")
        self.base = (store or LocalStore()).path(destination) / endpoint_name / VARIANT
        self.sampling_percentage = sampling_percentage
        self._lock = threading.Lock()
        self._hour: str | None = None
        self._file = None

    def capture(self, request: bytes, request_type: str, response: bytes, response_type: str):
        """Record one successful request, subject to sampling."""
        if self.sampling_percentage < 100 and random.uniform(0, 100) >= self.sampling_percentage:
            return
        when = datetime.now(UTC)
        line = json.dumps(record(request, request_type, response, response_type, when)) + "\n"
        with self._lock:
            self._file_for(when).write(line)
            self._file.flush()

    def _file_for(self, when: datetime):
        hour = when.strftime("%Y/%m/%d/%H")
        if hour != self._hour:
            self._close_file()
            folder = self.base / hour
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{when.strftime('%M-%S')}-{when.microsecond // 1000:03d}-{uuid.uuid4().hex}"
            self._file = open(Path(folder, name + ".jsonl"), "a", encoding="utf-8")
            self._hour = hour
        return self._file

    def close(self):
        with self._lock:
            self._close_file()

    def _close_file(self):
        if self._file is not None:
            self._file.close()
            self._file, self._hour = None, None
