"""Pre-fork serving, as the SageMaker scikit-learn container's gunicorn does it.

The parent binds 127.0.0.1:<port> and forks the workers (one per core by default,
`SAGEMAKER_MODEL_SERVER_WORKERS` overrides); each worker loads the model once and accepts
on the shared socket. The parent only supervises: it replaces a worker that dies, and on
SIGTERM (or SIGINT) stops the workers gracefully (they stop accepting, finish the requests
in flight and exit) and exits itself. A worker that cannot load the model stops the
endpoint instead of being replaced forever.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from mlops_core.files import write_atomic

LOAD_FAILED = 3  # a worker's exit code when the model would not load
GRACE_S = 8.0  # for requests in flight at a stop; lifecycle kills the group after 10 s
TERMINATE = {signal.SIGTERM, signal.SIGINT}
WATCHED = TERMINATE | {signal.SIGCHLD}


def worker_count(environ=os.environ) -> int:
    text = environ.get("SAGEMAKER_MODEL_SERVER_WORKERS")
    if text is None:
        return os.cpu_count() or 1
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise ValueError(f"SAGEMAKER_MODEL_SERVER_WORKERS must be a positive integer, got {text!r}")
    return int(text)


def serve(server, load: Callable, workers: int, ready_file: Path | None, name: str) -> int:
    """Run `workers` processes serving `server`'s socket until SIGTERM; the exit code."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)  # taken with sigtimedwait, never async
    supervisor = _Supervisor(server, load)
    if not supervisor.start(workers):
        supervisor.stop()
        return 2
    if ready_file:
        write_atomic(ready_file, json.dumps(
            {"pid": os.getpid(), "port": server.server_port, "workers": workers}))
    print(f"serving {name} at {server.url} with {workers} workers", file=sys.stderr, flush=True)
    code = supervisor.run()
    supervisor.stop()
    return code


class _Supervisor:
    def __init__(self, server, load: Callable):
        self.server = server
        self.load = load
        self.workers: set[int] = set()

    def start(self, count: int) -> bool:
        """Fork the workers and wait until each has loaded the model; False if one failed."""
        read_end, write_end = os.pipe()
        for _ in range(count):
            self._spawn(write_end, read_end)
        os.close(write_end)
        ready = b""
        while chunk := os.read(read_end, count):  # at EOF every worker is ready or gone
            ready += chunk
        os.close(read_end)
        return len(ready) == count

    def run(self) -> int:
        """Replace workers that die until told to stop; the exit code."""
        while True:
            received = signal.sigtimedwait(WATCHED, 1.0)
            if received is not None and received.si_signo in TERMINATE:
                return 0
            for pid, code in self._reap():
                if code == LOAD_FAILED:
                    return 2  # the model no longer loads: replacing the worker would not help
                print(f"worker {pid} exited ({_describe(code)}); starting another",
                      file=sys.stderr, flush=True)
                self._spawn()

    def stop(self):
        """Workers stop accepting, finish what is in flight and exit; stragglers are killed."""
        self.server.socket.close()
        for pid in self.workers:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while self.workers and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.1)
            self._reap()
        for pid in self.workers:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.workers.clear()

    def _reap(self) -> list[tuple[int, int]]:
        exited = []
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            self.workers.discard(pid)
            exited.append((pid, os.waitstatus_to_exitcode(status)))
        return exited

    def _spawn(self, ready_fd: int | None = None, other_fd: int | None = None):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            self.workers.add(pid)
            return
        if other_fd is not None:
            os.close(other_fd)
        _work(self.server, self.load, ready_fd, os.getppid())


def _work(server, load: Callable, ready_fd: int | None, parent: int):
    """A worker's whole life; it never returns into the parent's code."""
    code = 1
    try:
        stop = _stopper(server)
        signal.signal(signal.SIGTERM, lambda *_: stop())
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides, on SIGINT too
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
        try:
            server.endpoint = load()
        except Exception as err:
            print(f"endpoint failed to start: {err}", file=sys.stderr, flush=True)
            code = LOAD_FAILED
            return
        # What is loaded now lives as long as the worker: keep it out of the garbage
        # collector's passes, which requests would otherwise pay for.
        gc.freeze()
        if ready_fd is not None:
            os.write(ready_fd, b".")
            os.close(ready_fd)

        def check_parent():  # serve_forever calls it twice a second
            if os.getppid() != parent:
                stop()  # orphaned: the parent was killed

        server.service_actions = check_parent
        server.serve_forever()
        server.server_close()  # waits for the requests in flight
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _stopper(server) -> Callable[[], None]:
    def stop():
        if not server.stopping:
            server.stopping = True
            # shutdown() waits for serve_forever, which runs in this (the main) thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    return stop


def _describe(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
