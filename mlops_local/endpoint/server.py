"""A local endpoint that speaks the SageMaker inference contract over HTTP on 127.0.0.1.

`GET /ping` answers 200 once the model is loaded; `POST /invocations` runs the model's own
serving code (`<model dir>/code/$SAGEMAKER_PROGRAM`, imported by path as the scikit-learn
container does) and answers its output, or a 4xx JSON message naming what is wrong with the
request. Successful requests are written to data capture.

Run: python -m mlops_local.endpoint.server --model-dir DIR [--port 0] [--capture-uri s3://...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

from mlops_core.files import write_atomic
from mlops_local.endpoint.capture import CaptureWriter

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker real-time endpoints refuse larger payloads
HANDLERS = ("model_fn", "input_fn", "predict_fn", "output_fn")
JSON_TYPE = "application/json"


class ServingCodeError(ValueError):
    """The model directory lacks usable serving code; the message names what is missing."""


def load_handlers(model_dir: Path) -> ModuleType:
    """Import `<model dir>/code/$SAGEMAKER_PROGRAM` by path, like the serving container."""
    submit_dir = Path(model_dir) / "code"
    program = os.environ.get("SAGEMAKER_PROGRAM", "inference.py")
    path = submit_dir / program
    if not path.is_file():
        raise ServingCodeError(f"no serving code at {path} (SAGEMAKER_PROGRAM={program})")
    sys.path.insert(0, str(submit_dir))  # the container lets the program import its neighbours
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would; dataclasses look their module up
    spec.loader.exec_module(module)
    missing = [name for name in HANDLERS if not callable(getattr(module, name, None))]
    if missing:
        raise ServingCodeError(f"{path} does not define {', '.join(missing)}")
    return module


def error_body(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


class Endpoint:
    """A loaded model and its handlers; `invoke` is safe to call from many threads."""

    def __init__(self, model_dir: Path, capture: CaptureWriter | None = None):
        self.handlers = load_handlers(model_dir)
        self.model = self.handlers.model_fn(str(model_dir))
        self.capture = capture

    def invoke(self, body: bytes, content_type: str | None, accept: str | None):
        """Returns (HTTP status, response body, response content type)."""
        if not accept or accept.strip() == "*/*":
            accept = content_type
        try:
            data = self.handlers.input_fn(body, content_type)
            prediction = self.handlers.predict_fn(data, self.model)
            answer = self.handlers.output_fn(prediction, accept)
        except ValueError as err:  # the handlers' way of refusing a request
            return getattr(err, "http_status", 400), error_body(str(err)), JSON_TYPE
        except Exception as err:  # a model bug must not stop the server
            traceback.print_exc()
            return 500, error_body(f"model error: {type(err).__name__}: {err}"), JSON_TYPE
        payload, answer_type = answer if isinstance(answer, tuple) else (answer, accept)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if self.capture is not None:
            self.capture.capture(body, content_type or "", payload, answer_type)
        return 200, payload, answer_type


class InvocationHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: EndpointServer

    def do_GET(self):
        if self.path == "/ping":
            self._answer(200, b"", "text/plain")
        else:
            self._answer(404, error_body(f"no route GET {self.path}"), JSON_TYPE)

    def do_POST(self):
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            self._answer(411, error_body("Content-Length is required"), JSON_TYPE)
            return
        size = int(length)
        if size > MAX_BODY_BYTES:
            self._discard(size)
            message = f"request body is {size} bytes; the limit is {MAX_BODY_BYTES} bytes"
            self._answer(413, error_body(message), JSON_TYPE)
            return
        body = self.rfile.read(size)
        if self.path != "/invocations":
            self._answer(404, error_body(f"no route POST {self.path}"), JSON_TYPE)
            return
        status, payload, content_type = self.server.endpoint.invoke(
            body, self.headers.get("Content-Type"), self.headers.get("Accept")
        )
        self._answer(status, payload, content_type)

    def _discard(self, size: int):
        """Read an oversized body so the client can read our answer instead of a reset."""
        while size > 0:
            chunk = self.rfile.read(min(size, 1 << 16))
            if not chunk:
                break
            size -= len(chunk)

    def _answer(self, status: int, payload: bytes, content_type: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        """Requests are not logged: at thousands per second the log would cost more than them."""


class EndpointServer(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops connections from 16 concurrent clients

    def __init__(self, endpoint: Endpoint, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), InvocationHandler)
        self.endpoint = endpoint

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(
    model_dir: Path,
    port: int = 0,
    capture_uri: str | None = None,
    endpoint_name: str = "local",
    sampling: float = 100,
) -> EndpointServer:
    """A bound server for the model; call `serve_forever()` on it (here or in a thread)."""
    capture = CaptureWriter(capture_uri, endpoint_name, sampling) if capture_uri else None
    return EndpointServer(Endpoint(Path(model_dir), capture), port=port)


def _stop(*_):
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_local.endpoint.server")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capture-uri", help="capture destination, s3://.../v<model version>")
    parser.add_argument("--endpoint-name", default="local")
    parser.add_argument("--sampling", type=float, default=100, help="percent of requests captured")
    parser.add_argument("--ready-file", type=Path, help="written with the port once serving")
    args = parser.parse_args(argv)
    try:
        server = make_server(
            args.model_dir, args.port, args.capture_uri, args.endpoint_name, args.sampling
        )
    except (OSError, ValueError) as err:
        print(f"endpoint failed to start: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    if args.ready_file:
        write_atomic(args.ready_file,
                     json.dumps({"pid": os.getpid(), "port": server.server_address[1]}))
    print(f"serving {args.model_dir} at {server.url}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if server.endpoint.capture is not None:
            server.endpoint.capture.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
