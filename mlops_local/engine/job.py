"""One job's sandbox: `/opt/ml` mapped to a per-job directory; its user code run as a process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mlops_local import warm
from mlops_local.engine.errors import StepFailure
from mlops_local.registry import LOCAL_ACCOUNT
from mlops_local.store import LocalStore

OPT_ML = "/opt/ml"
PYTHONS = ("python", "python3", "/usr/bin/python3", "/usr/local/bin/python", "/usr/bin/python")
TAIL_LINES = 15
STOP_GRACE_S = 10
# A job's container starts with its image's variables and the job's Environment, never the
# caller's (credentials, MLOPS_*, a profiler's or coverage's hooks). Of this machine's, a job
# keeps only what finds programs and files and reads text as this machine does.
MACHINE_VARIABLES = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


class JobStopped(StepFailure):
    """A job not started, or a result not kept, because its execution is stopping."""


class Processes:
    """The job processes one execution has running, so that stopping it can end them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopped = False

    def start(self, command: list[str], log, env: dict, cwd: Path):
        """Start a job: a Python script from the warm fork server (`mlops_local.warm`), any
        other command as a subprocess; stdout and stderr go to the open file `log`."""
        with self._lock:  # a job starts either before stop() sees it or not at all
            if self.stopped:
                raise JobStopped("not started: the execution is stopping")
            if warm.can_run(command):
                process = warm.WarmProcess(command, env, cwd, log.name)
            else:
                process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self._running.add(process)
            return process

    def finished(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Start no more jobs; terminate the running ones, killing those that outlive `grace`."""
        with self._lock:
            self.stopped = True
            running = list(self._running)
        for process in running:
            process.terminate()
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass(frozen=True)
class Job:
    """The name and directories of one step's job in one execution."""

    name: str
    root: Path  # <state>/jobs/<execution>/<step>
    store: LocalStore
    region: str = "us-east-1"
    processes: Processes | None = None  # the execution's running jobs, when it can be stopped

    def arn(self, kind: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{LOCAL_ACCOUNT}:{kind}/{self.name}"

    @property
    def opt_ml(self) -> Path:
        return self.root / "opt_ml"

    @property
    def log(self) -> Path:
        return self.root / "job.log"

    def container(self, path: str) -> Path:
        """The local directory behind a container path under /opt/ml."""
        return Path(self.map(path))

    def map(self, value):
        """Rewrite a string (or the strings in a list) that starts with /opt/ml to this job."""
        if isinstance(value, list):
            return [self.map(item) for item in value]
        if isinstance(value, str) and (value == OPT_ML or value.startswith(OPT_ML + "/")):
            return str(self.opt_ml) + value[len(OPT_ML):]
        return value

    def python_command(self, command: list[str]) -> list[str]:
        """The command with its Python interpreter replaced by this one."""
        command = [self.map(part) for part in command]
        if command and command[0] in PYTHONS:
            command[0] = sys.executable
        return command

    def run(self, command: list[str], environment: dict, cwd: Path | None = None) -> int:
        """Run the command with stdout and stderr appended to the job log; the exit code."""
        env = {name: os.environ[name] for name in MACHINE_VARIABLES if name in os.environ}
        env.update({k: str(v) for k, v in environment.items()})
        env["MLOPS_OPT_ML"] = str(self.opt_ml)
        env["PYTHONUNBUFFERED"] = "1"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            processes = self.processes or Processes()
            try:
                process = processes.start(command, log, env, cwd or self.opt_ml)
            except OSError as err:
                log.write(f"cannot start {command[0]}: {err}\n")
                return 127
            try:
                return process.wait()
            finally:
                processes.finished(process)

    def failure_reason(self, exit_code: int, message_file: Path) -> str:
        """The job's own message (if it wrote one), then the log's last lines and its path."""
        message = ""
        if message_file.is_file():
            message = message_file.read_text(errors="replace").strip()
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        tail = "\n".join(lines[-TAIL_LINES:])
        head = message or f"the job exited with code {exit_code}"
        return f"{head}\nlast lines of {self.log}:\n{tail}"
