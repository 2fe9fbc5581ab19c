"""Processing job: announce itself in a directory, then wait for its partner to do the same.

Two of these finish only if they run at the same time; the wait is bounded so a
sequential engine fails the step instead of hanging.
"""

import argparse
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--me", required=True)
parser.add_argument("--other")
args = parser.parse_args()
directory = Path(args.dir)
(directory / f"{args.me}.started").write_text(str(time.time()))
deadline = time.monotonic() + 20
while args.other and not (directory / f"{args.other}.started").exists():
    if time.monotonic() > deadline:
        raise SystemExit(f"{args.other} never started while {args.me} ran")
    time.sleep(0.02)
(directory / f"{args.me}.done").write_text(str(time.time()))
