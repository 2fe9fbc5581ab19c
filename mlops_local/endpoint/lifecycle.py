"""Run local endpoints as background processes, one per stage.

A running endpoint is recorded in `<state>/endpoints/<stage>.json` (pid of the server's
parent process, port, workers, url, model_dir, capture_uri, model_info); its log is
`<state>/endpoints/<stage>.log`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlops_core.config import ROOT, state_dir
from mlops_core.files import write_atomic
from mlops_core.names import INFERENCE_ID

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 10
SERVER_MODULE = "mlops_local.endpoint.server"


class EndpointError(ValueError):
    """A local endpoint that cannot be started, found or reached; the message says which."""


def _folder() -> Path:
    return state_dir() / "endpoints"


def _record_path(stage: str) -> Path:
    if not stage or "/" in stage or stage.startswith("."):
        raise EndpointError(f"invalid stage name {stage!r}")
    return _folder() / f"{stage}.json"


def _alive(pid: int) -> bool:
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    # Where /proc exists, make sure a recycled pid is not mistaken for the endpoint.
    return not cmdline.exists() or SERVER_MODULE.encode() in cmdline.read_bytes()


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return "\n".join(text[-lines:]) or "(no output)"


def _terminate(pid: int):
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)  # the server stops its workers gracefully, then exits
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            try:  # the server leads its own session: its workers go with it
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = float("inf")
        time.sleep(0.02)


def start(
    stage: str,
    model_dir: Path,
    capture_uri: str | None = None,
    port: int = 0,
    sampling: float = 100,
    model_info: dict | None = None,
    endpoint_name: str | None = None,
) -> dict:
    """Start an endpoint for `stage` in the background and wait until it answers /ping.

    A stage that already runs is replaced: the new endpoint starts first, then the old one
    stops. `capture_uri` is the capture destination (`mlops_core.names.capture_uri`).
    """
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "model.joblib").is_file():
        raise EndpointError(f"no model.joblib in {model_dir}")
    record_path = _record_path(stage)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    previous = _read(record_path)
    ready = record_path.with_name(f"{stage}.ready-{os.getpid()}-{time.monotonic_ns()}")
    log = record_path.with_suffix(".log")
    command = [
        sys.executable, "-m", SERVER_MODULE, "--model-dir", str(model_dir),
        "--port", str(port), "--endpoint-name", endpoint_name or stage,
        "--sampling", str(sampling), "--ready-file", str(ready),
    ]  # fmt: skip
    if capture_uri:
        command += ["--capture-uri", capture_uri]
    # The server answers requests in worker processes (one per core) and threads; OpenMP
    # inside each predict call on top of that oversubscribes the cores.
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    with open(log, "a") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        ready_info = _wait_until_ready(process, ready, log)
    finally:
        ready.unlink(missing_ok=True)
    port = ready_info["port"]
    record = {
        "stage": stage,
        "pid": process.pid,
        "port": port,
        "workers": ready_info["workers"],
        "url": f"http://127.0.0.1:{port}",
        "model_dir": str(model_dir),
        "capture_uri": capture_uri,
        "sampling": sampling,
        "model_info": model_info or {},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(record_path, json.dumps(record, indent=2))
    if previous and previous["pid"] != process.pid:
        _terminate(previous["pid"])
    return record


def _wait_until_ready(process: subprocess.Popen, ready: Path, log: Path) -> dict:
    """What the server wrote to its ready file (pid, port, workers), once it answers /ping."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EndpointError(f"endpoint exited with code {process.returncode}: {_log_tail(log)}")
        if ready.exists():
            info = json.loads(ready.read_text())
            if _ping(f"http://127.0.0.1:{info['port']}"):
                return info
        time.sleep(0.05)
    _terminate(process.pid)
    raise EndpointError(f"endpoint did not answer /ping within {START_TIMEOUT_S} s; see {log}")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise EndpointError(f"endpoint record {path} is not valid JSON: {err}") from None


def status(stage: str) -> dict:
    """The record of the running endpoint of `stage`."""
    record = _read(_record_path(stage))
    if record is None:
        raise EndpointError(f"no local endpoint is running for stage '{stage}'")
    if not _alive(record["pid"]):
        raise EndpointError(
            f"the local endpoint for stage '{stage}' (pid {record['pid']}) is not running; "
            f"see {_record_path(stage).with_suffix('.log')}"
        )
    return record


def stopped_record_path(stage: str) -> Path:
    """Where a stopped endpoint's record stays, so its captured traffic can still be checked."""
    return _record_path(stage).with_suffix(".stopped.json")


def last_record(stage: str) -> dict:
    """The record of the stage's running endpoint, or else of the one stopped last."""
    for path in (_record_path(stage), stopped_record_path(stage)):
        record = _read(path)
        if record is not None:
            return record
    raise EndpointError(f"no endpoint deployed for stage {stage}")


def stop(stage: str) -> dict:
    """Stop the endpoint of `stage`, keeping its record as the stage's stopped one."""
    path = _record_path(stage)
    record = _read(path)
    if record is None:
        raise EndpointError(f"no local endpoint is running for stage '{stage}'")
    _terminate(record["pid"])
    path.replace(stopped_record_path(stage))
    return record


def invoke(stage: str, body: bytes, content_type: str, accept: str | None = None,
           inference_id: str | None = None) -> tuple[int, bytes, str | None]:
    """Send one request to the endpoint of `stage`; returns (HTTP status, response body, the
    request's inference id: `inference_id`, or the one the endpoint made up)."""
    url = status(stage)["url"]
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {}),
               **({INFERENCE_ID: inference_id} if inference_id else {})}
    request = urllib.request.Request(f"{url}/invocations", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read(), reply.headers.get(INFERENCE_ID)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get(INFERENCE_ID)
    except urllib.error.URLError as err:
        raise EndpointError(f"cannot reach the endpoint at {url}: {err.reason}") from None
