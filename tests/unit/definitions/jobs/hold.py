"""Processing job: announce itself (with its pid), hold until released, then write its output.

Tests hold a job to kill or stop its execution mid-step; the hold is bounded so a job
nobody releases still ends on its own.
"""

import argparse
import os
import signal
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--me", required=True)
parser.add_argument("--on-term", choices=("exit", "finish"), default="exit")
args = parser.parse_args()
directory = Path(args.dir)
if args.on_term == "finish":  # SIGTERM releases it: a job that completes as it is stopped
    signal.signal(signal.SIGTERM, lambda *_: (directory / f"{args.me}.release").touch())
# Whole or not at all: the test reads the pid as soon as the file exists.
(directory / f"{args.me}.starting").write_text(str(os.getpid()))
os.replace(directory / f"{args.me}.starting", directory / f"{args.me}.started")
deadline = time.monotonic() + 300
while not (directory / f"{args.me}.release").exists():
    if time.monotonic() > deadline:
        raise SystemExit(f"{args.me} was never released")
    time.sleep(0.02)
(Path(os.environ["OUT_DIR"]) / f"{args.me}.txt").write_text(args.me)
print(f"{args.me} released")
