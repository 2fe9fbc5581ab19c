"""The head of a plain HTTP/1.x request, read at once.

The standard library's handler reads a request's headers with the email package's parser,
about 45 us a request, more than the rest of the HTTP exchange. Almost every request an
endpoint gets is plain: `GET` or `POST`, HTTP/1.0 or 1.1, a path of visible ASCII, and at
most 99 `Name: value` lines of visible ASCII ending in CRLF, all already buffered. For
those, `plain_head` gives what the standard library's parse would give (the same values,
untrimmed at the end, in the same order); for anything else it gives None and the standard
library parses the request, with its own refusals (tests/unit/test_head.py holds the two
side by side).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http.client import HTTPMessage

REQUEST_LINE = re.compile(rb"(GET|POST) (/(?!/)[!-~]*) (HTTP/1\.[01])\r\n")
HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t -~]*)")
MAX_HEADERS = 99  # http.client counts the blank line too: it refuses 100 header lines


@dataclass(frozen=True)
class PlainHead:
    command: str
    path: str
    version: str
    headers: HTTPMessage
    size: int  # bytes of the buffer the headers took, their blank line included


def plain_head(request_line: bytes, buffered: bytes) -> PlainHead | None:
    """The request's head when it is plain and its headers are all in `buffered` (the bytes
    after the request line); None otherwise."""
    line = REQUEST_LINE.fullmatch(request_line)
    if line is None:
        return None
    if buffered.startswith(b"\r\n"):
        block, size = b"", 2
    else:
        end = buffered.find(b"\r\n\r\n")
        if end < 0:
            return None
        block, size = buffered[:end], end + 4
    headers = HTTPMessage()
    if block:
        lines = block.split(b"\r\n")
        if len(lines) > MAX_HEADERS:
            return None
        for header in lines:
            field = HEADER_LINE.fullmatch(header)
            if field is None:
                return None
            headers.set_raw(field[1].decode("ascii"), field[2].decode("ascii"))
    command, path, version = (part.decode("ascii") for part in line.groups())
    return PlainHead(command, path, version, headers, size)
