"""The warm fork server's jobs: separate processes that start with none of the program that
started them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def test_a_warm_job_imports_nothing_of_the_program_that_started_it(tmp_path):
    job = tmp_path / "job.py"
    job.write_text("import json, sys\nprint(json.dumps(sorted(sys.modules)))\n")
    program = tmp_path / "program.py"  # a __main__ module that imports the CLI, as mlops does
    program.write_text(textwrap.dedent(f"""
        import os, sys
        from mlops import cli
        from mlops_local import warm
        if __name__ == "__main__":
            job = warm.WarmProcess([sys.executable, {str(job)!r}], dict(os.environ),
                                   {str(tmp_path)!r}, {str(tmp_path / "job.log")!r})
            sys.exit(job.wait())
    """))
    subprocess.run([sys.executable, str(program)], check=True, env=os.environ, timeout=120)
    modules = json.loads((tmp_path / "job.log").read_text())
    assert "pandas" in modules  # what the server preloads
    assert not {"mlops.cli", "mlops_core"} & set(modules)
