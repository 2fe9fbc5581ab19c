"""The console's state-changing actions, each through the function the CLI command calls.

Every action returns the message to show on the page; a refusal raises a ValueError (the
project's errors all are one) whose text is the CLI's own refusal. The pipeline run and the
monitoring run are started as `mlops` processes in the background, as a person would start
them; the page they come back to polls until they end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime

from mlops_core.config import ROOT, Config, state_dir
from mlops_core.names import stage_problem
from mlops_local import deploy, review
from mlops_local.endpoint import lifecycle


class ActionError(ValueError):
    """An action the console refuses before calling anything."""


def set_status(cfg: Config, version: str, status: str, comment: str) -> str:
    verb = "approved" if status == "Approved" else "rejected"
    change = review.set_status(cfg.model_package_group, version, status,
                               comment.strip() or f"{verb} in the console")
    if not change.changed:
        raise ActionError(change.unchanged)
    message = f"{change.name}: {status}"
    for stage in change.serving:
        message += (f". Warning: the local {stage} endpoint still serves {change.name}: deploy "
                    f"another approved version or stop it")
    return message


def _stage(stage: str) -> str:
    if problem := stage_problem(stage):
        raise ActionError(problem)
    return stage


def deploy_stage(cfg: Config, stage: str) -> str:
    record = deploy.deploy(cfg, _stage(stage))  # prod: refused unless staging's gate passed
    model = record["model_info"]
    return (f"{stage}: {model['ModelPackageGroupName']}/{model['ModelPackageVersion']} serving "
            f"at {record['url']}")


def run_gate(cfg: Config, stage: str) -> str:
    package, result = deploy.run_gate(cfg, _stage(stage))
    version = package["ModelPackageVersion"]
    if not result.passed:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.passed)
        raise ActionError(f"endpoint test of {stage} (version {version}) failed: {failed}")
    return f"endpoint test of {stage} passed for version {version}: it may be promoted to prod"


def stop(stage: str) -> str:
    lifecycle.stop(_stage(stage))
    return f"{stage} endpoint stopped"


class Background:
    """`mlops` commands the console started, each logging to `<state>/console/`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen] = {}

    def running(self, kind: str | None = None) -> list[str]:
        with self._lock:
            return [k for k, p in self._processes.items()
                    if p.poll() is None and kind in (None, k.split(":")[0])]

    def start(self, key: str, *args: str) -> str:
        """Start `mlops ARGS` unless the console's `key` command still runs; its log file."""
        with self._lock:
            previous = self._processes.get(key)
            if previous is not None and previous.poll() is None:
                raise ActionError(f"`mlops {' '.join(args)}` started from the console is still "
                                  f"running (pid {previous.pid})")
            folder = state_dir() / "console"
            folder.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            log = folder / f"{key.replace(':', '-')}-{stamp}.log"
            with open(log, "w") as out:
                self._processes[key] = subprocess.Popen(
                    [sys.executable, "-m", "mlops", *args], cwd=ROOT, env=dict(os.environ),
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
            return str(log)


def run_pipeline(background: Background) -> str:
    log = background.start("pipeline", "pipeline", "run")
    return f"pipeline run started with the configured parameters (log: {log})"


def run_monitor(background: Background, stage: str) -> str:
    log = background.start(f"monitor:{_stage(stage)}", "monitor", "run", stage)
    return f"monitoring run of {stage} started (log: {log})"
