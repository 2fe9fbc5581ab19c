"""The warm fork server's jobs: separate processes that start with none of the program that
started them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def _printed_by_warm_job(tmp_path, source: str, env: dict | None = None):
    """What a job script (`source`) printed as JSON, run from the fork server by a __main__
    module that imports the CLI, as mlops does, with `env` (default: this one); the job's
    own environment is PATH alone."""
    job = tmp_path / "job.py"
    job.write_text(source)
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(f"""
        import os, sys
        from mlops import cli
        from mlops_local import warm
        if __name__ == "__main__":
            job = warm.WarmProcess([sys.executable, {str(job)!r}], {{"PATH": os.environ["PATH"]}},
                                   {str(tmp_path)!r}, {str(tmp_path / "job.log")!r})
            sys.exit(job.wait())
    """))
    subprocess.run([sys.executable, str(program)], check=True, env=env or os.environ, timeout=120)
    return json.loads((tmp_path / "job.log").read_text())


def test_a_warm_job_imports_nothing_of_the_program_that_started_it(tmp_path):
    modules = _printed_by_warm_job(
        tmp_path, "import json, sys\nprint(json.dumps(sorted(sys.modules)))\n")
    assert "pandas" in modules  # what the server preloads
    assert not {"mlops.cli", "mlops_core"} & set(modules)


def test_a_job_gets_its_environment_and_the_machines_not_the_callers(tmp_path, monkeypatch):
    from mlops_local.engine.job import Job
    from mlops_local.store import LocalStore

    monkeypatch.setenv("MLOPS_CALLERS_OWN", "not for jobs")  # and the fixtures' AWS credentials
    script = tmp_path / "job.py"
    script.write_text("import json, os\nprint(json.dumps(dict(os.environ)))\n")
    job = Job("env-probe", tmp_path / "job", LocalStore(tmp_path / "s3"))
    job.opt_ml.mkdir(parents=True)
    assert job.run([sys.executable, str(script)], {"ROWS": 7}) == 0
    seen = json.loads(job.log.read_text().splitlines()[-1])
    assert seen["ROWS"] == "7" and seen["PATH"] == os.environ["PATH"]
    assert seen["MLOPS_OPT_ML"] == str(job.opt_ml)
    assert not {"MLOPS_CALLERS_OWN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(seen)


def test_a_warm_job_starts_untraced_with_the_default_sigterm(tmp_path):
    """Under coverage (any tracer) the fork server's interpreter is traced; its jobs are not,
    as `python SCRIPT` with the job's environment would not be."""
    rc = tmp_path / ".coveragerc"
    rc.write_text(f"[run]\nsource = {tmp_path / 'nothing'}\ndata_file = {tmp_path / 'cov'}\n")
    env = {**os.environ, "COVERAGE_PROCESS_START": str(rc)}
    env.pop("COVERAGE_PROCESS_CONFIG", None)
    untraced = _printed_by_warm_job(
        tmp_path, "import json, signal, sys\nprint(json.dumps([sys.gettrace() is None, "
        "signal.getsignal(signal.SIGTERM) == signal.SIG_DFL]))\n", env)
    assert untraced == [True, True]
