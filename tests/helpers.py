"""What several test modules share: the CLI as a person runs it, offline builds, broken data
sets, a config variant, the engine's hand-written definitions, a fitted model directory, its
captured traffic and registry helpers.

Tests import helpers from here only (never from another test module or a conftest)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import botocore.httpsession
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlops_core import config as project_config
from mlops_core.config import ROOT
from mlops_local.store import LocalStore
from model_deploy import build

INFERENCE_SCRIPT = ROOT / "model_build" / "scripts" / "inference.py"


def run_mlops(state: Path, *args: str, timeout: float = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The `mlops` command line, as a person runs it, against its own state directory
    (`env`: extra environment variables)."""
    env = {**os.environ, "MLOPS_HOME": str(state), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mlops.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


# ---------------------------------------------------------------- offline builds

class NetworkUsed(AssertionError):
    pass


@contextlib.contextmanager
def offline(tmp_path_factory):
    """No credentials, and every HTTP request from botocore refused."""
    patch = pytest.MonkeyPatch()
    patch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    patch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path_factory.mktemp("aws") / "none"))

    def refuse(self, request):
        raise NetworkUsed(f"network call while building: {request.method} {request.url}")

    patch.setattr(botocore.httpsession.URLLib3Session, "send", refuse)
    try:
        yield
    finally:
        patch.undo()


# ---------------------------------------------------------------- broken data sets

def set_cell(lines: list[str], row: int, column: str, value: str) -> list[str]:
    """A copy of the CSV lines with one data cell (0-based data row) replaced."""
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = value
    return lines[: row + 1] + [",".join(cells)] + lines[row + 2 :]


def drop_column(lines: list[str], column: str) -> list[str]:
    index = lines[0].split(",").index(column)
    return [",".join(c for i, c in enumerate(line.split(",")) if i != index) for line in lines]


# Each broken copy: how to break the lines, and what the problem list must say.
# Data row r sits on file line r + 2 (the header is line 1).
BROKEN = {
    "missing column": (lambda ls: drop_column(ls, "height"), ["column 'height' is missing"]),
    "missing target": (lambda ls: drop_column(ls, "rings"), ["column 'rings' is missing"]),
    "text in numeric": (
        lambda ls: set_cell(ls, 4, "length", "abc"),
        ["column 'length'", "1 row (line 6)", "'abc'", "not finite numbers"],
    ),
    "infinite number": (
        lambda ls: set_cell(ls, 0, "diameter", "inf"),
        ["column 'diameter'", "line 2", "not finite numbers"],
    ),
    "unknown category": (
        lambda ls: set_cell(ls, 9, "sex", "X"),
        ["column 'sex'", "line 11", "'X'", "allowed values"],
    ),
    "missing values": (
        lambda ls: set_cell(set_cell(set_cell(ls, 1, "whole_weight", ""), 2, "whole_weight",
                                       "NaN"), 3, "whole_weight", "NA"),
        ["column 'whole_weight'", "3 rows (line 3, 4, 5)", "missing value"],
    ),
    "empty file": (lambda ls: [], ["the file is empty"]),
    "header only": (lambda ls: ls[:1], ["header but no data rows"]),
    "no header": (lambda ls: ls[1:], ["no header row"]),
    "ragged rows": (
        lambda ls: ls[:3] + [ls[3] + ",1.0"] + ls[4:6] + [ls[6].rsplit(",", 2)[0]] + ls[7:],
        ["2 rows (line 4, 7)", "do not have 9 fields"],
    ),
    "negative target": (
        lambda ls: set_cell(ls, 7, "rings", "-3"),
        ["column 'rings'", "line 9", "negative"],
    ),
    "duplicate column": (
        lambda ls: [ls[0] + ",sex"] + [line + ",M" for line in ls[1:]],
        ["column 'sex' appears more than once"],
    ),
}


# ---------------------------------------------------------------- configuration

def variant(directory, *, replace: dict | None = None,
            candidates: str | None = None) -> project_config.Config:
    """A copy of mlops.toml with lines replaced (each must be there) and, when `candidates` is
    given, the [model.candidates.*] tables replaced by it."""
    text = project_config.CONFIG_FILE.read_text()
    data_file = project_config.load().data_file
    replace = {'file = "data/abalone.csv"': f'file = "{data_file}"', **(replace or {})}
    for old, new in replace.items():
        assert old in text, f"mlops.toml no longer has {old!r}"
        text = text.replace(old, new)
    if candidates is not None:
        text = re.sub(r"\[model\.candidates\.[^\]]+\]\n(?:[^\[\n].*\n)*\n?", "", text)
        text += "\n" + candidates
    path = directory / "mlops.toml"
    path.write_text(text)
    return project_config.load(path)


# ---------------------------------------------------------------- engine definitions

DEFINITIONS = Path(__file__).resolve().parent / "unit" / "definitions"
JOBS = DEFINITIONS / "jobs"
ABALONE = ROOT / "data" / "abalone.csv"
RAW_URI = "s3://test/raw/abalone.csv"


def load(name: str) -> dict:
    return json.loads((DEFINITIONS / f"{name}.json").read_text())


def stage(state: Path) -> LocalStore:
    """A fresh local store holding the data set and every job script the definitions use."""
    store = LocalStore(state / "s3")
    store.put_file(ABALONE, RAW_URI)
    for script in ("summarize.py", "publish.py", "barrier.py", "hold.py"):
        store.put_file(JOBS / script, f"s3://test/code/{script}")
    store.upload_dir(JOBS / "trainer", "s3://test/code/trainer")
    store.upload_dir(JOBS / "drivers", "s3://test/code/drivers")
    return store


def start_engine(state: Path, name: str, parameters: dict,
                 pipeline_name: str = "pipeline") -> subprocess.Popen:
    """The engine running definition `name` in a process of its own, in a process group of its
    own (so a test can kill it and its jobs together, as a closed terminal would)."""
    code = ("import json, sys; from pathlib import Path; from mlops_local.engine import run; "
            "run(json.loads(Path(sys.argv[1]).read_text()), json.loads(sys.argv[2]), "
            "pipeline_name=sys.argv[3], state=Path(sys.argv[4]))")
    return subprocess.Popen(
        [sys.executable, "-c", code, str(DEFINITIONS / f"{name}.json"), json.dumps(parameters),
         pipeline_name, str(state)],
        cwd=ROOT, env={**os.environ, "MLOPS_HOME": str(state)}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until `path` exists, failing if `process` ends first or the wait runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} before {path} appeared: "
                                 f"{process.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


# ---------------------------------------------------------------- a fitted model directory

TEST_ROWS = 600
# A linear model keeps the fixture quick to fit on a busy machine; serving is model-agnostic.


def build_model_dir(model_dir: Path) -> tuple[Path, Path, float]:
    """Fit, save model.joblib + schema.json + code/inference.py; returns the dir, the
    test split CSV and the model's RMSE on it."""
    cfg = project_config.load()
    data = pd.read_csv(cfg.data_file)
    shuffled = data.sample(frac=1.0, random_state=cfg.seed)
    test, train = shuffled.iloc[:TEST_ROWS], shuffled.iloc[TEST_ROWS:]
    features = cfg.feature_names
    pipeline = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("sex", OneHotEncoder(handle_unknown="ignore"), cfg.categorical)],
                    remainder="passthrough",
                ),
            ),
            ("regress", Ridge()),
        ]
    )
    pipeline.fit(train[features], train[cfg.target])
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, model_dir / "model.joblib")
    (model_dir / "schema.json").write_text(json.dumps(cfg.schema()))
    (model_dir / "code").mkdir(exist_ok=True)
    shutil.copy(INFERENCE_SCRIPT, model_dir / "code" / "inference.py")
    test_csv = model_dir.parent / "test.csv"
    test[[*features, cfg.target]].to_csv(test_csv, index=False)
    errors = pipeline.predict(test[features]) - test[cfg.target].to_numpy()
    return model_dir, test_csv, float(np.sqrt(np.mean(errors**2)))


def captured(state: Path, destination: str, folder: str = "AllTraffic"
             ) -> list[tuple[Path, dict]]:
    """Every data capture record under `destination` in the state's store, with its file
    (`folder="refused"`: the records of refused requests)."""
    base = LocalStore(state / "s3").path(destination)
    return [
        (path, json.loads(line))
        for path in sorted(base.rglob("*.jsonl")) if folder in path.parts
        for line in path.read_text().splitlines()
    ]


# ---------------------------------------------------------------- model registry

REGION = "us-east-1"
NAMES = build.Names(
    project="abalone", bucket="mlops-test", role_arn="arn:aws:iam::123456789012:role/mlops",
    retrain_pipeline="abalone-train", drift_check_code_uri="s3://mlops-test/abalone/code/dc/",
    drift_check_image_uri="sklearn-image", monitor_image_uri="monitor-image",
)


def register(client, group: str, count: int, baselines: bool = True) -> list[str]:
    """`count` pending versions of a package, as the training pipeline registers them."""
    if hasattr(client, "create_model_package_group"):  # the local registry has no groups
        client.create_model_package_group(ModelPackageGroupName=group)
    arns = []
    for version in range(1, count + 1):
        prefix = f"s3://mlops-test/abalone/{group}/v{version}"
        request = {
            "ModelPackageGroupName": group,
            "ModelApprovalStatus": "PendingManualApproval",
            "InferenceSpecification": {
                "Containers": [{"Image": "sklearn-image",
                                "ModelDataUrl": f"{prefix}/model.tar.gz",
                                "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
        }
        if baselines:
            request["DriftCheckBaselines"] = {"ModelDataQuality": {
                "Statistics": {"ContentType": "application/json",
                               "S3Uri": f"{prefix}/baseline/statistics.json"},
                "Constraints": {"ContentType": "application/json",
                                "S3Uri": f"{prefix}/baseline/constraints.json"},
            }}
        arns.append(client.create_model_package(**request)["ModelPackageArn"])
    return arns


def set_status(client, arn: str, status: str) -> None:
    client.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)


# ---------------------------------------------------------------- the console

@contextlib.contextmanager
def console_server(state: Path):
    """The web console over `state` in a thread on a free port: yields (base URL, the token
    its forms carry)."""
    import threading

    from mlops.console import server

    patch = pytest.MonkeyPatch()
    patch.setenv("MLOPS_HOME", str(state))
    httpd = server.make_server(0)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.RequestHandlerClass.console.token
    finally:
        httpd.shutdown()
        httpd.server_close()
        patch.undo()


def http(base: str, method: str, path: str, form: dict | None = None,
         headers: dict | None = None) -> tuple[int, dict, str]:
    """One request to the console, following no redirect: (status, headers, body text).
    A POST carries the console's own Origin unless `headers` says otherwise."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    body = urlencode(form or {}) if method == "POST" else None
    sent = {"Host": address.netloc, **({"Origin": base, "Content-Type":
            "application/x-www-form-urlencoded"} if method == "POST" else {}), **(headers or {})}
    connection.request(method, path, body=body, headers={k: v for k, v in sent.items() if v})
    reply = connection.getresponse()
    text = reply.read().decode("utf-8", "replace")
    connection.close()
    return reply.status, dict(reply.headers), text
