"""The endpoint reads a plain request's head as the standard library reads it, and leaves any
other request to the standard library."""

from __future__ import annotations

import io
from http.server import BaseHTTPRequestHandler

import pytest

from mlops_local.endpoint.head import plain_head
from mlops_local.endpoint.server import InvocationHandler


def _reading(handler_class, raw: bytes):
    """A handler of `handler_class` that has read `raw`'s request line, as handle_one_request
    does, and nothing else."""

    class Probe(handler_class):
        def __init__(self):  # no socket: the request comes from memory
            self.rfile = io.BufferedReader(io.BytesIO(raw))
            self.wfile = io.BytesIO()
            self.raw_requestline = self.rfile.readline(65537)
            self.request_version = self.default_request_version
            self.close_connection = True

        send_error = BaseHTTPRequestHandler.send_error  # the endpoint's own needs a server

        def date_time_string(self, timestamp=None):
            return "Wed, 02 Dec 2026 00:00:00 GMT"

        def log_message(self, *args):
            pass

    return Probe()


def _parsed(handler_class, raw: bytes) -> tuple:
    handler = _reading(handler_class, raw)
    accepted = handler.parse_request()
    return (accepted, handler.command, getattr(handler, "path", None), handler.request_version,
            handler.requestline, list(getattr(handler, "headers", {}).items()),
            handler.close_connection,
            handler.wfile.getvalue(), handler.rfile.read())


class StandardLibrary(InvocationHandler):
    parse_request = BaseHTTPRequestHandler.parse_request


PLAIN = [
    b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
    b"Content-Length: 5\r\n\r\n1,2,3",
    b"GET /ping HTTP/1.1\r\n\r\n",
    b"GET /ping HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /ping HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    b"POST /invocations HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"POST /invocations HTTP/1.1\r\nContent-Length: 44 \r\nX-Empty:\r\nX-Tab:\t a\tb \r\n"
    b"content-length: 45\r\n\r\n",
    b"POST /invocations HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /invocations HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /invocations?x=%20 HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 99 + b"\r\n",
]

NOT_PLAIN = [
    b"GET /\r\n",  # HTTP/0.9
    b"PUT /invocations HTTP/1.1\r\n\r\n",
    b"GET //ping HTTP/1.1\r\n\r\n",
    b"GET /ping HTTP/2.0\r\n\r\n",
    b"GET  /ping HTTP/1.1\r\n\r\n",
    b"GET /ping HTTP/1.1\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nX-Value: caf\xc3\xa9\r\n\r\n",
    b"GET /ping HTTP/1.1\r\nX-Value: a\rb\r\n\r\n",
    b"POST /invocations HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 100 + b"\r\n",
    b"POST /invocations HTTP/1.1\r\nHost: x\r\n",  # the head has not all arrived
]


@pytest.mark.parametrize("raw", PLAIN)
def test_a_plain_head_reads_as_the_standard_library_reads_it(raw):
    head = _reading(InvocationHandler, raw)
    assert plain_head(head.raw_requestline, head.rfile.peek()) is not None
    assert _parsed(InvocationHandler, raw) == _parsed(StandardLibrary, raw)


@pytest.mark.parametrize("raw", NOT_PLAIN)
def test_any_other_head_is_left_to_the_standard_library(raw):
    head = _reading(InvocationHandler, raw)
    assert plain_head(head.raw_requestline, head.rfile.peek()) is None
    assert _parsed(InvocationHandler, raw) == _parsed(StandardLibrary, raw)
