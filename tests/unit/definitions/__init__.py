"""Hand-written pipeline definitions and the tiny job scripts they run, for the engine tests."""

from __future__ import annotations

import json
from pathlib import Path

from mlops.config import ROOT
from mlops.store import LocalStore

HERE = Path(__file__).resolve().parent
JOBS = HERE / "jobs"
ABALONE = ROOT / "data" / "abalone.csv"
RAW_URI = "s3://test/raw/abalone.csv"


def load(name: str) -> dict:
    return json.loads((HERE / f"{name}.json").read_text())


def stage(state: Path) -> LocalStore:
    """A fresh local store holding the data set and every job script the definitions use."""
    store = LocalStore(state / "s3")
    store.put_file(ABALONE, RAW_URI)
    for script in ("summarize.py", "publish.py", "barrier.py"):
        store.put_file(JOBS / script, f"s3://test/code/{script}")
    store.upload_dir(JOBS / "trainer", "s3://test/code/trainer")
    store.upload_dir(JOBS / "drivers", "s3://test/code/drivers")
    return store
