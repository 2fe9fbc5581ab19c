"""`make bench`: the project's speed figures, each beside what it is measured against."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import batch, console, endpoint, model_quality, monitor, pipeline


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as home:
        print("## training pipeline (local engine)")
        _, model_dir = pipeline.run(Path(home))
        print("\n## local endpoint (the pipeline's model)")
        endpoint.run(model_dir)
        print("\n## batch scoring (the pipeline's model)")
        batch.run(model_dir)
    print("\n## drift check")
    monitor.run()
    print("\n## model quality")
    model_quality.run()
    print("\n## web console pages")
    console.run()


if __name__ == "__main__":
    main()
