"""The console's HTTP server: 127.0.0.1 only, server-rendered pages, POST-only actions.

Cross-site requests are refused three ways: every request's Host must be this console's own
(127.0.0.1:port or localhost:port, against DNS rebinding), every POST must come from this
console's origin (Origin, else Referer) and carry the per-process token its forms hold.
An action answers with a 303 back to its page, the result or the refusal in the query
string; an unexpected error is a one-line 500 page, its traceback on standard error.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import sys
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import jinja2

from mlops.console import DEFAULT_PORT, actions, views
from mlops_core import config as project_config

HOST = "127.0.0.1"
MAX_FORM_BYTES = 64 * 1024
HERE = Path(__file__).resolve().parent
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
FILE_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json",
              ".png": "image/png"}
PAGE_POLICY = "default-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'"
# A monitoring report is self-contained (inline styles and SVG) and runs no script.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict = field(default_factory=dict)

class Refused(Exception):
    """A request refused before any route runs (403) or one that has no route (404/405)."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title = status, title

class Console:
    """What the handlers share: the configuration, the templates, the token, the background
    processes."""

    def __init__(self, cfg: project_config.Config, port: int):
        self.cfg = cfg
        self.port = port
        self.token = secrets.token_urlsafe(32)
        self.background = actions.Background()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined)
        self.templates.filters["num"] = lambda value: "-" if value is None else f"{value:.3f}"

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(f"http://{host}:{self.port}" for host in (HOST, "localhost"))

    def page(self, template: str, status: int = 200, **context) -> Response:
        html = self.templates.get_template(template).render(
            csrf=self.token, project=self.cfg.project, **context)
        return Response(status, html.encode())

    def error(self, status: int, title: str, message: str) -> Response:
        return self.page("error.html", status, title=title, message=message, flash=None)

# routes -----------------------------------------------------------------------------------

def _flash(query: dict) -> dict | None:
    if "message" not in query:
        return None
    return {"text": query["message"][0], "error": query.get("kind", [""])[0] == "error"}

def registry_page(console: Console, query: dict) -> Response:
    return console.page("registry.html", flash=_flash(query), page="registry",
                        **views.registry(console.cfg))

def version_page(console: Console, query: dict, version: str) -> Response:
    return console.page("version.html", flash=_flash(query), page="registry",
                        **views.version_page(console.cfg, version))

def plot_png(console: Console, query: dict, version: str) -> Response:
    return Response(body=views.plot(console.cfg, version), content_type="image/png")

def comparison_png(console: Console, query: dict, version: str) -> Response:
    return Response(body=views.comparison_plot(console.cfg, version), content_type="image/png")

def executions_page(console: Console, query: dict) -> Response:
    data = views.executions(console.cfg)
    starting = bool(console.background.running("pipeline"))
    return console.page("executions.html", flash=_flash(query), page="executions",
                        live=data["running"] or starting, starting=starting, **data)

def execution_page(console: Console, query: dict, execution_id: str) -> Response:
    data = views.execution(execution_id)
    return console.page("execution.html", flash=_flash(query), page="executions",
                        live=data["running"], execution=data)

def step_log(console: Console, query: dict, execution_id: str, step: str) -> Response:
    return Response(body=views.step_log(execution_id, step).encode(),
                    content_type="text/plain; charset=utf-8")

def deployments_page(console: Console, query: dict) -> Response:
    return console.page("deployments.html", flash=_flash(query), page="deployments",
                        **views.deployments(console.cfg))

def endpoint_page(console: Console, query: dict, stage: str) -> Response:
    return console.page("endpoint.html", flash=_flash(query), page="deployments",
                        endpoint=views.running_endpoint(console.cfg, stage))

def monitoring_page(console: Console, query: dict) -> Response:
    running = console.background.running("monitor")
    return console.page("monitoring.html", flash=_flash(query), page="monitoring",
                        live=bool(running), running=running, **views.monitoring(console.cfg))

def monitoring_file(console: Console, query: dict, stage: str, relative: str) -> Response:
    path = views.monitoring_file(console.cfg, stage, relative)
    return Response(body=path.read_bytes(),
                    content_type=FILE_TYPES.get(path.suffix, "application/octet-stream"),
                    headers={"Content-Security-Policy": REPORT_POLICY})

def status_json(console: Console, query: dict) -> Response:
    """What a live page polls: whether anything it shows is still moving."""
    running = (views.executions(console.cfg)["running"]
               or bool(console.background.running()))
    return Response(body=json.dumps({"running": running}).encode(),
                    content_type="application/json")

def static_file(console: Console, query: dict, name: str) -> Response:
    path = HERE / "static" / name
    if path.suffix not in STATIC_TYPES or not path.is_file():
        raise Refused(404, "not found", f"no static file {name!r}")
    return Response(body=path.read_bytes(), content_type=STATIC_TYPES[path.suffix])

PAGES = [
    (r"/", lambda console, query: Response(303, headers={"Location": "/registry"})),
    (r"/registry", registry_page),
    (r"/registry/([^/]+)", version_page),
    (r"/registry/([^/]+)/plot\.png", plot_png),
    (r"/registry/([^/]+)/comparison\.png", comparison_png),
    (r"/executions", executions_page),
    (r"/executions/([^/]+)", execution_page),
    (r"/executions/([^/]+)/steps/([^/]+)/log", step_log),
    (r"/deployments", deployments_page),
    (r"/deployments/([^/]+)", endpoint_page),
    (r"/monitoring", monitoring_page),
    (r"/monitoring/([^/]+)/files/(.+)", monitoring_file),
    (r"/status\.json", status_json),
    (r"/static/([A-Za-z0-9_.-]+)", static_file),
]

# (path, action(console, form, *groups) -> message, the page to go back to); the groups are
# path segments as sent, still percent-encoded
ACTIONS = [
    (r"/registry/([^/]+)/approve",
     lambda c, form, v: actions.set_status(c.cfg, v, "Approved", form.get("comment", "")),
     lambda v: f"/registry/{quote(v, safe='%')}"),
    (r"/registry/([^/]+)/reject",
     lambda c, form, v: actions.set_status(c.cfg, v, "Rejected", form.get("comment", "")),
     lambda v: f"/registry/{quote(v, safe='%')}"),
    (r"/executions/run", lambda c, form: actions.run_pipeline(c.background),
     lambda: "/executions"),
    (r"/deployments/([^/]+)/deploy", lambda c, form, s: actions.deploy_stage(c.cfg, s),
     lambda s: "/deployments"),
    (r"/deployments/([^/]+)/gate", lambda c, form, s: actions.run_gate(c.cfg, s),
     lambda s: "/deployments"),
    (r"/deployments/([^/]+)/stop", lambda c, form, s: actions.stop(s),
     lambda s: "/deployments"),
    (r"/monitoring/([^/]+)/run", lambda c, form, s: actions.run_monitor(c.background, s),
     lambda s: "/monitoring"),
]

def _match(table: list, path: str):
    for entry in table:
        found = re.fullmatch(entry[0], path)
        if found:
            return entry, found.groups()
    return None, ()

# the handler ------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    server_version = "mlops-console"
    console: Console  # set on the class made for each server

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        sys.stderr.write(f"console: {self.command} {self.path} {args[1] if len(args) > 1 else ''}"
                         "\n")

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._serve(self._get)

    def do_POST(self):  # noqa: N802
        self._serve(self._post)

    def _serve(self, handle) -> None:
        try:
            self._check_host()
            response = handle(urlsplit(self.path))
        except Refused as refused:
            response = self.console.error(refused.status, refused.title, str(refused))
        except views.NotFound as missing:
            response = self.console.error(404, missing.title, str(missing))
        except Exception:  # a page never shows a traceback; the console's log does
            traceback.print_exc(file=sys.stderr)
            response = self.console.error(500, "internal error", "the console failed to "
                                          "answer this request; its terminal has the details")
        self._send(response)

    def _check_host(self) -> None:
        host = self.headers.get("Host", "")
        if host not in {origin.split("//", 1)[1] for origin in self.console.origins}:
            raise Refused(403, "refused", f"host {host!r} is not this console's own "
                          f"(open {self.console.origins[0]})")

    def _get(self, url) -> Response:
        if _match(ACTIONS, url.path)[0]:
            raise Refused(405, "use the page's button", f"{url.path} changes state: it takes "
                          "a POST from the console's own form, not a GET")
        entry, groups = _match(PAGES, url.path)
        if entry is None:
            raise Refused(404, "not found", f"no page {url.path}")
        return entry[1](self.console, parse_qs(url.query), *groups)

    def _post(self, url) -> Response:
        entry, groups = _match(ACTIONS, url.path)
        if entry is None:
            raise Refused(404, "not found", f"no action {url.path}")
        self._check_origin()
        form = self._form()
        if not hmac.compare_digest(form.get("csrf", "").encode(), self.console.token.encode()):
            raise Refused(403, "refused", "the form's token is missing or wrong: reload the "
                          "page and try again")
        _, action, back = entry
        try:
            message, kind = action(self.console, form, *groups), "ok"
        except (ValueError, FileNotFoundError) as err:  # the CLI's refusals, word for word
            message, kind = str(err), "error"
        location = f"{back(*groups)}?{urlencode({'message': message, 'kind': kind})}"
        return Response(303, headers={"Location": location})

    def _check_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None and self.headers.get("Referer"):
            parts = urlsplit(self.headers["Referer"])
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.console.origins:
            raise Refused(403, "refused", f"a state change from origin {origin!r}: only this "
                          "console's own pages may ask for one")

    def _form(self) -> dict[str, str]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_FORM_BYTES:
            raise Refused(413, "refused", f"a form of at most {MAX_FORM_BYTES} bytes")
        body = self.rfile.read(length).decode("utf-8", "replace")
        return {key: values[0] for key, values in parse_qs(body).items()}

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        headers = {"Content-Security-Policy": PAGE_POLICY, **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

def make_server(port: int = DEFAULT_PORT, cfg: project_config.Config | None = None
                ) -> ThreadingHTTPServer:
    """The console on 127.0.0.1:`port` (0: any free port), not yet serving."""
    server = ThreadingHTTPServer((HOST, port), Handler, bind_and_activate=True)
    console = Console(cfg or project_config.load(), server.server_address[1])
    server.RequestHandlerClass = type("ConsoleHandler", (Handler,), {"console": console})
    server.daemon_threads = True
    return server
