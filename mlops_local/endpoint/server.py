"""A local endpoint that speaks the SageMaker inference contract over HTTP on 127.0.0.1.

`GET /ping` answers 200 once the model is loaded; `POST /invocations` runs the model's own
serving code (`<model dir>/code/$SAGEMAKER_PROGRAM`, imported by path as the scikit-learn
container does) and answers its output, or a 4xx JSON message naming what is wrong with the
request; a 5xx means the model failed. Successful requests are written to data capture;
requests the serving code refuses are counted beside it (`capture.RefusalLog`).

Requests are framed strictly (issue 16): the body is exactly Content-Length bytes, and
chunked bodies, conflicting or malformed lengths, short bodies and stalled clients are
refused or cut off within time limits (`Limits`). The InvokeEndpoint headers
`X-Amzn-SageMaker-Inference-Id` and `X-Amzn-SageMaker-Custom-Attributes` are checked against
botocore's model of the service.

`make_server` gives one server in the calling process (threads); `main` runs the pre-fork
server of `mlops_local.endpoint.prefork`, as the background endpoint does.

Run: python -m mlops_local.endpoint.server --model-dir DIR [--port 0] [--capture-uri s3://...]
"""

from __future__ import annotations

import argparse
import email.utils
import functools
import importlib.util
import io
import json
import math
import os
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

from mlops_core.names import INFERENCE_ID, MAX_PAYLOAD_BYTES
from mlops_core.service_model import java_pattern
from mlops_local.endpoint.capture import CaptureWriter
from mlops_local.endpoint.head import plain_head

HANDLERS = ("model_fn", "input_fn", "predict_fn", "output_fn")
JSON_TYPE = "application/json"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
POLL_S = 0.25  # how often a waiting connection looks whether the server is stopping
LINGER_S = 1.0


class ServingCodeError(ValueError):
    """The model directory lacks usable serving code; the message names what is missing."""


@dataclass(frozen=True)
class Limits:
    """Time limits and the connection bound of one server (one worker process).

    `header_timeout`: from the first byte of a request to the end of its headers (and a new
    connection's wait for its first byte);
    `body_timeout`: to receive the whole body (and to send an answer);
    `idle_timeout`: a kept-alive connection waiting for its next request.
    """

    header_timeout: float = 60.0
    body_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_connections: int = 64

    ENVIRONMENT = {
        "header_timeout": "MLOPS_ENDPOINT_HEADER_TIMEOUT",
        "body_timeout": "MLOPS_ENDPOINT_BODY_TIMEOUT",
        "idle_timeout": "MLOPS_ENDPOINT_IDLE_TIMEOUT",
        "max_connections": "MLOPS_ENDPOINT_MAX_CONNECTIONS",
    }

    @classmethod
    def from_environment(cls, environ=os.environ) -> Limits:
        values = {}
        for field, variable in cls.ENVIRONMENT.items():
            text = environ.get(variable)
            if text is None:
                continue
            kind = int if field == "max_connections" else float
            try:
                value = kind(text)
            except ValueError:
                value = 0
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{variable} must be a positive number, got {text!r}")
            values[field] = value
        return cls(**values)


_SUBMIT_DIRS: set[str] = set()  # the code/ directories load_handlers put on sys.path


def _own_neighbours(submit_dir: str) -> None:
    """Put `submit_dir` first on sys.path (the container lets the program import its
    neighbours), and forget the neighbours another model's code imported in this process, so
    that this model imports its own (code already loaded keeps the modules it has)."""
    others = tuple(directory + os.sep for directory in _SUBMIT_DIRS - {submit_dir})
    if others:
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(others):
                del sys.modules[name]
    sys.path[:] = [submit_dir, *(entry for entry in sys.path
                                 if entry != submit_dir and entry + os.sep not in others)]
    _SUBMIT_DIRS.add(submit_dir)


def load_handlers(model_dir: Path) -> ModuleType:
    """Import `<model dir>/code/$SAGEMAKER_PROGRAM` by path, like the serving container."""
    submit_dir = Path(model_dir) / "code"
    program = os.environ.get("SAGEMAKER_PROGRAM", "inference.py")
    path = submit_dir / program
    if not path.is_file():
        raise ServingCodeError(f"no serving code at {path} (SAGEMAKER_PROGRAM={program})")
    _own_neighbours(os.path.abspath(submit_dir))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would; dataclasses look their module up
    spec.loader.exec_module(module)
    missing = [name for name in HANDLERS if not callable(getattr(module, name, None))]
    if missing:
        raise ServingCodeError(f"{path} does not define {', '.join(missing)}")
    return module


def error_body(message: str, problems=()) -> bytes:
    """A refusal's JSON answer; the serving code's row problems, if it lists them, as
    `problems` (every bad row, so a client can say which rows to fix)."""
    document = {"message": message}
    if problems:
        document["problems"] = [{"row": p.row, "reason": p.reason, "feature": p.feature,
                                 "value": p.value} for p in problems]
    return json.dumps(document, default=repr).encode()


class Endpoint:
    """A loaded model and its handlers; `invoke` is safe to call from many threads."""

    def __init__(self, model_dir: Path, capture: CaptureWriter | None = None):
        self.handlers = load_handlers(model_dir)
        self.model = self.handlers.model_fn(str(model_dir))
        self.capture = capture
        self.model_errors = 0
        self._lock = threading.Lock()

    def invoke(self, body: bytes, content_type: str | None, accept: str | None,
               inference_id: str | None = None):
        """Returns (HTTP status, response body, response content type).

        The request's fault (a 4xx): a ValueError with a 4xx `http_status` from any handler,
        or any ValueError or RecursionError from input_fn (400 unless it names a 4xx). Any
        other failure is the model's: a 500, counted and logged.
        """
        if not accept or accept.strip() == "*/*":
            accept = content_type
        try:
            data = self.handlers.input_fn(body, content_type)
        except (ValueError, RecursionError) as err:
            return self._refusal(err, body, content_type, inference_id)
        except Exception as err:
            return self._failure(err)
        try:
            prediction = self.handlers.predict_fn(data, self.model)
            answer = self.handlers.output_fn(prediction, accept)
        except ValueError as err:
            if 400 <= getattr(err, "http_status", 500) < 500:
                return self._refusal(err, body, content_type, inference_id)
            return self._failure(err)
        except Exception as err:
            return self._failure(err)
        payload, answer_type = answer if isinstance(answer, tuple) else (answer, accept)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if self.capture is not None:
            self.capture.capture(body, content_type or "", payload, answer_type, inference_id)
        return 200, payload, answer_type

    def _refusal(self, err: ValueError | RecursionError, body: bytes, content_type: str | None,
                 inference_id: str | None):
        if self.capture is not None:
            self.capture.refusals.refused(err, body, content_type or "", inference_id)
        return _refusal(err)

    def _failure(self, err: Exception):
        with self._lock:
            self.model_errors += 1
            count = self.model_errors
        print(f"model error {count} in process {os.getpid()}:", file=sys.stderr)
        traceback.print_exception(err, file=sys.stderr)
        sys.stderr.flush()
        return 500, error_body(f"model error: {type(err).__name__}: {err}"), JSON_TYPE


def _refusal(err: ValueError | RecursionError):
    if isinstance(err, RecursionError):
        return 400, error_body(f"request body is nested too deeply to parse: {err}"), JSON_TYPE
    status = getattr(err, "http_status", 400)
    return ((status if 400 <= status < 500 else 400),
            error_body(str(err), getattr(err, "problems", None) or ()), JSON_TYPE)


@dataclass(frozen=True)
class HeaderRule:
    """An InvokeEndpoint header's length and pattern, as botocore's service model has them."""

    header: str
    minimum: int
    maximum: int
    service_pattern: str  # as the service model states it (Java syntax)
    pattern: re.Pattern | None

    def problem(self, value: str) -> str | None:
        if not self.minimum <= len(value) <= self.maximum:
            return (f"{self.header} must be {self.minimum}-{self.maximum} characters long, "
                    f"got {len(value)}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            return f"{self.header} must match {self.service_pattern}, got {value!r}"
        return None


@functools.cache
def header_rules() -> tuple[HeaderRule, ...]:
    import botocore.session  # loading the service model costs a moment; the parent does it once

    shape = (botocore.session.get_session().get_service_model("sagemaker-runtime")
             .operation_model("InvokeEndpoint").input_shape)
    rules = []
    for member in ("InferenceId", "CustomAttributes"):
        member_shape = shape.members[member]
        meta = member_shape.metadata
        rules.append(HeaderRule(member_shape.serialization["name"], meta.get("min", 0),
                                meta["max"], meta["pattern"],
                                java_pattern(meta["pattern"])))
    return tuple(rules)


def header_problem(headers) -> str | None:
    """What is wrong with the request's InvokeEndpoint headers, if anything."""
    for rule in header_rules():
        values = headers.get_all(rule.header) or []
        if len(values) > 1:
            return f"{rule.header} is given {len(values)} times; send it once"
        if values and (problem := rule.problem(values[0])):
            return problem
    return None


class _DeadlineReader(io.RawIOBase):
    """The connection's socket as a raw stream whose reads fail once `deadline` passes.

    A socket timeout alone restarts with every byte, so a client trickling bytes would hold
    the connection forever; the deadline bounds the whole phase. While `idle` (no byte of the
    next request read yet), a stopping server ends the stream instead of waiting on.
    """

    def __init__(self, sock, server: EndpointServer):
        self.sock = sock
        self.server = server
        self.deadline = math.inf
        self.idle = False

    def phase(self, seconds: float, idle: bool = False):
        self.deadline = time.monotonic() + seconds
        self.idle = idle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self.idle and self.server.stopping:
                return 0
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("time limit reached")
            self.sock.settimeout(min(remaining, POLL_S))
            try:
                return self.sock.recv_into(buffer)
            except TimeoutError:
                continue


class InvocationHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Buffered: the status line, headers and body leave in one send when the request is done
    # (handle_one_request and finish flush), not one send for the headers and one for the body.
    wbufsize = 1 << 16
    server: EndpointServer

    def setup(self):
        super().setup()
        self.rfile.close()  # replaced by a reader with deadlines
        self.reader = _DeadlineReader(self.connection, self.server)
        self.rfile = io.BufferedReader(self.reader)
        self.served = 0

    def handle(self):
        try:
            super().handle()
        except ConnectionError:
            pass  # the client went away; nothing to answer

    def handle_one_request(self):
        limits = self.server.limits
        self.reader.phase(limits.idle_timeout if self.served else limits.header_timeout, True)
        try:
            if not self.rfile.peek(1):
                self.close_connection = True
                return
        except TimeoutError:
            self.close_connection = True
            return
        self.reader.phase(limits.header_timeout)
        self.served += 1
        super().handle_one_request()

    def parse_request(self):
        # What the reader holds after the request line (its buffer, 8 KiB): a head that is not
        # all there yet, or longer, is read by the standard library.
        head = plain_head(self.raw_requestline, self.rfile.peek())
        if head is None:
            return super().parse_request()
        self.rfile.read(head.size)  # already buffered
        # What the standard library's parse_request does with a plain request's head.
        self.command, self.path, self.request_version = head.command, head.path, head.version
        self.requestline = self.raw_requestline.decode("ascii").rstrip("\r\n")
        self.headers = head.headers
        connection = self.headers.get("Connection", "").lower()
        self.close_connection = (connection == "close" if head.version == "HTTP/1.1"
                                 else connection != "keep-alive")
        if (head.version == "HTTP/1.1"
                and self.headers.get("Expect", "").lower() == "100-continue"):
            return self.handle_expect_100()
        return True

    def handle_expect_100(self):
        answered = super().handle_expect_100()
        self.wfile.flush()  # the client waits for the interim answer before sending the body
        return answered

    def do_GET(self):
        if "Transfer-Encoding" in self.headers or self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True  # an unread body would be taken for the next request
        if self.path == "/ping":
            self._answer(200, b"", "text/plain")
        else:
            self._answer(404, error_body(f"no route GET {self.path}"), JSON_TYPE)

    def do_POST(self):
        body = self._read_body()
        if body is None:
            return
        if self.path != "/invocations":
            self._answer(404, error_body(f"no route POST {self.path}"), JSON_TYPE)
            return
        problem = header_problem(self.headers)
        if problem:
            self._answer(400, error_body(problem), JSON_TYPE)
            return
        # Every request gets an inference id (the caller's, or a new one), captured and
        # answered, so ground truth can name the request it labels.
        inference_id = self.headers.get(INFERENCE_ID) or str(uuid.uuid4())
        status, payload, content_type = self.server.endpoint.invoke(
            body, self.headers.get("Content-Type"), self.headers.get("Accept"), inference_id,
        )
        attributes = self.headers.get(CUSTOM_ATTRIBUTES)
        echo = [(CUSTOM_ATTRIBUTES, attributes)] if attributes is not None else []
        self._answer(status, payload, content_type, [(INFERENCE_ID, inference_id), *echo])

    def _read_body(self) -> bytes | None:
        """The body, exactly Content-Length bytes; None once a refusal has been answered."""
        if "Transfer-Encoding" in self.headers:
            return self._refuse(411, "chunked bodies are not supported; send Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return self._refuse(411, "Content-Length is required")
        if len(set(lengths)) > 1:
            return self._refuse(400, f"Content-Length is given with different values {lengths}")
        length = lengths[0]
        if not (length.isascii() and length.isdigit()):
            return self._refuse(
                400, f"Content-Length must be a decimal number of bytes, got {length!r}")
        size = int(length)
        self.reader.phase(self.server.limits.body_timeout)
        if size > MAX_PAYLOAD_BYTES:
            self._discard(size)
            message = f"request body is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes"
            return self._refuse(413, message, close=self.close_connection)
        try:
            body = self.rfile.read(size)
        except TimeoutError:
            return self._refuse(408, f"request body not received within "
                                     f"{self.server.limits.body_timeout:g} s")
        if len(body) < size:
            return self._refuse(400, f"request body ended after {len(body)} of the {size} "
                                     f"bytes its Content-Length announced")
        return body

    def _discard(self, size: int):
        """Read an oversized body so the client can read our answer instead of a reset."""
        try:
            while size > 0:
                chunk = self.rfile.read(min(size, 1 << 16))
                if not chunk:
                    break
                size -= len(chunk)
        except TimeoutError:
            pass
        self.close_connection = size > 0

    def _refuse(self, status: int, message: str, close: bool = True) -> None:
        """Answer a request whose framing is broken; the connection cannot carry another."""
        self.close_connection = close
        self._answer(status, error_body(message), JSON_TYPE)

    def send_error(self, code, message=None, explain=None):
        """The standard library's own refusals (bad request line, too many headers), in JSON."""
        self.close_connection = True
        self._answer(code, error_body(message or self.responses.get(code, ("error",))[0]),
                     JSON_TYPE)

    def _answer(self, status: int, payload: bytes, content_type: str, extra=()):
        if self.server.stopping:
            self.close_connection = True
        self.connection.settimeout(self.server.limits.body_timeout)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def date_time_string(self, timestamp=None):
        if timestamp is not None:
            return super().date_time_string(timestamp)
        return _http_date(int(time.time()))

    def log_message(self, format, *args):
        """Requests are not logged: at thousands per second the log would cost more than them."""


@functools.lru_cache(maxsize=1)
def _http_date(second: int) -> str:
    """The Date header of answers given in this second: formatted once, not per answer."""
    return email.utils.formatdate(second, usegmt=True)


def _linger(sock):
    """Read what the client still sends, for a moment, before closing: closing with unread
    bytes resets the connection, and the reset can destroy our answer before the client
    reads it (a refused request's body, say). nginx calls this a lingering close."""
    deadline = time.monotonic() + LINGER_S
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        if not sock.recv(1 << 16):
            return


class EndpointServer(ThreadingHTTPServer):
    """Bound to 127.0.0.1 when made; `endpoint` (the loaded model) is set before serving, so
    that the pre-fork parent can bind and each worker load its own model."""

    request_queue_size = 128  # the default 5 drops connections from 16 concurrent clients
    daemon_threads = False  # server_close waits for requests in flight

    def __init__(self, port: int = 0, limits: Limits | None = None,
                 endpoint: Endpoint | None = None):
        super().__init__(("127.0.0.1", port), InvocationHandler)
        self.socket.setblocking(False)  # workers share it: another may take a connection first
        self.limits = limits or Limits()
        self.endpoint = endpoint
        self.stopping = False
        self._slots = threading.BoundedSemaphore(self.limits.max_connections)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def get_request(self):
        # At the bound, leave the connection queued (for another worker) instead of taking it.
        if not self._slots.acquire(timeout=POLL_S):
            raise OSError("connection limit reached")
        try:
            return super().get_request()
        except BaseException:
            self._slots.release()
            raise

    def shutdown_request(self, request):
        try:
            request.shutdown(socket.SHUT_WR)
            _linger(request)
        except OSError:
            pass
        finally:
            self.close_request(request)
            self._slots.release()

    def server_close(self):
        self.stopping = True  # kept-alive idle connections end, then their threads are joined
        super().server_close()
        if self.endpoint is not None and self.endpoint.capture is not None:
            self.endpoint.capture.close()


def loader(model_dir: Path, capture_uri: str | None = None, endpoint_name: str = "local",
           sampling: float = 100):
    """A function that loads the model and its capture writer (once per worker)."""
    def load() -> Endpoint:
        capture = CaptureWriter(capture_uri, endpoint_name, sampling) if capture_uri else None
        return Endpoint(Path(model_dir), capture)

    return load


def make_server(
    model_dir: Path,
    port: int = 0,
    capture_uri: str | None = None,
    endpoint_name: str = "local",
    sampling: float = 100,
    limits: Limits | None = None,
) -> EndpointServer:
    """A bound server for the model in this process; call `serve_forever()` on it (here or
    in a thread), then `shutdown()` and `server_close()`."""
    endpoint = loader(model_dir, capture_uri, endpoint_name, sampling)()
    header_rules()  # loaded now rather than on the first request
    return EndpointServer(port, limits, endpoint)


def main(argv: list[str] | None = None) -> int:
    from mlops_local.endpoint import prefork

    parser = argparse.ArgumentParser(prog="python -m mlops_local.endpoint.server")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capture-uri", help="capture destination, s3://.../v<model version>")
    parser.add_argument("--endpoint-name", default="local")
    parser.add_argument("--sampling", type=float, default=100, help="percent of requests captured")
    parser.add_argument("--ready-file", type=Path, help="written with the port once serving")
    parser.add_argument("--workers", type=int,
                        help="worker processes (default $SAGEMAKER_MODEL_SERVER_WORKERS or cores)")
    args = parser.parse_args(argv)
    try:
        workers = args.workers or prefork.worker_count()
        header_rules()  # once, before the workers fork
        server = EndpointServer(args.port, Limits.from_environment())
    except (OSError, ValueError) as err:
        print(f"endpoint failed to start: {err}", file=sys.stderr)
        return 2
    load = loader(args.model_dir, args.capture_uri, args.endpoint_name, args.sampling)
    return prefork.serve(server, load, workers, args.ready_file, str(args.model_dir))


if __name__ == "__main__":
    sys.exit(main())
