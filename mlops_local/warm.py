"""Python job processes forked from a warm interpreter: the heavy libraries imported once.

A Processing or Training job whose user code is a Python script spent most of its time
importing pandas and scikit-learn (1.6 s of a 2.5 s tuning trial here). The engine starts such
a job as a child of one fork server per engine process (multiprocessing's forkserver, which
forks safely from a process that runs threads), whose interpreter has imported `PRELOAD`. The
child is still a separate process under the container contract: it gets exactly the job's
environment, working directory, argv, stdin from /dev/null, stdout and stderr in the job log,
and `sys.path` as `python SCRIPT` would build it (the script's directory, then the job's
PYTHONPATH); it runs the script as `__main__` and exits with its exit code. Nothing of the
project is imported in the server, so the job's own code (and its shipped data contract) is
what it imports.

This module imports only the standard library: it is what the fork server loads first.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import connection

PRELOAD = ("mlops_local.warm", "numpy", "pandas", "joblib", "scipy.stats", "sklearn.base",
           "sklearn.compose", "sklearn.ensemble", "sklearn.linear_model", "sklearn.metrics",
           "sklearn.neighbors", "sklearn.pipeline", "sklearn.preprocessing", "sklearn.svm",
           "matplotlib.figure", "matplotlib.backends.backend_agg")
_LOCK = threading.Lock()
_CONTEXT: list = []


def can_run(command: list[str]) -> bool:
    """Whether `command` is this interpreter running a script file (not -m, -c or options)."""
    return (len(command) >= 2 and command[0] == sys.executable
            and not command[1].startswith("-") and command[1].endswith(".py"))


def _context():
    with _LOCK:
        if not _CONTEXT:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
            _CONTEXT.append(context)
            atexit.register(_stop_server)
        return _CONTEXT[0]


def _stop_server() -> None:
    """End the fork server with this process. Left to notice the end by itself, it spent a
    second tearing down its interpreter while still holding this process's stdout and stderr,
    so whoever read them (a test, a benchmark, a pipe) waited for it. SIGTERM ends it at once:
    its jobs have ended and it keeps nothing."""
    from multiprocessing import forkserver

    pid = forkserver._forkserver._forkserver_pid  # no public accessor
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def prepare() -> None:
    """Start the fork server now, so that it imports PRELOAD while the run gets going (its
    first job waits for that) rather than when the first job starts."""
    _context()
    from multiprocessing import forkserver

    forkserver.ensure_running()


def _untraced() -> None:
    """Drop what a fork inherits from the server's interpreter and a fresh one would not have:
    a trace or profile function (a debugger's, or coverage's when the engine runs under it)
    and a SIGTERM handler."""
    sys.settrace(None)
    sys.setprofile(None)
    threading.settrace(None)
    threading.setprofile(None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_worker(initializer, initargs: tuple) -> None:
    _untraced()
    initializer(*initargs)


def process_pool(workers: int, initializer, initargs: tuple) -> ProcessPoolExecutor:
    """A pool of `workers` processes forked from the fork server, all started here, under
    _LOCK (see WarmProcess): a pool starts one process per task until it has `workers`."""
    pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_start_worker,
                               initargs=(initializer, initargs))
    with _LOCK, _main_module_hidden():
        started = [pool.submit(os.getpid) for _ in range(workers)]
    for future in started:
        future.result()
    return pool


class WarmProcess:
    """A job started from the fork server, with the part of subprocess.Popen the engine uses.

    multiprocessing's process objects are not thread-safe: starting one polls every other
    child, and two threads polling one child can both read its exit status, one of them
    getting nothing (exit code 255). So every start and poll holds _LOCK, and waiting happens
    on the process's sentinel outside it."""

    def __init__(self, command: list[str], env: dict, cwd, log_path: str):
        self.args = command
        context = _context()
        with _LOCK, _main_module_hidden():
            self._process = context.Process(
                target=run_script, args=(command[1:], dict(env), str(cwd), log_path))
            self._process.start()
        self.pid = self._process.pid

    def poll(self) -> int | None:
        with _LOCK:
            return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            connection.wait([self._process.sentinel], left)
        return code

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()


@contextlib.contextmanager
def _main_module_hidden():
    """multiprocessing has each child import the parent's __main__ module (the CLI, or pytest)
    as __mp_main__ before the target runs: 0.1 s of the CLI's imports in every job, and
    project code in a process that must start with only its own. A bare module stands in for
    it while a child starts (under _LOCK: the only starts of this process's children)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def run_script(argv: list[str], env: dict, cwd: str, log_path: str) -> None:
    """In the forked child: become `python SCRIPT ARGS` with this environment, and run it."""
    _untraced()
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    for target, source in ((0, null), (1, log), (2, log)):
        os.dup2(source, target)
    os.close(log)
    os.close(null)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    server_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    script = os.path.abspath(argv[0])
    job_path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    # As a fresh interpreter: the script's directory first, then the job's PYTHONPATH, then the
    # standard library and site-packages (not the server's own first entry or PYTHONPATH).
    rest = [p for p in sys.path[1:] if p not in server_path]
    sys.path[:] = [os.path.dirname(script), *job_path, *rest]
    sys.argv = [argv[0], *argv[1:]]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as ended:
        code = ended.code if isinstance(ended.code, int) else (0 if ended.code is None else 1)
        if not isinstance(ended.code, int | None):
            print(ended.code, file=sys.stderr)
    except BaseException:  # what an uncaught exception does to `python SCRIPT`
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
