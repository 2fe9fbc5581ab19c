"""Fixtures of the integration tests: a fitted model directory, a private state, a server.

The real model comes from `train.py`; these tests need a model of the same contract
(`tests.helpers.build_model_dir`: a Pipeline over the raw feature columns in schema order),
fitted on a train split and scored on a held-out split written as preprocess writes `test.csv`.
"""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from mlops_local.endpoint.server import make_server
from tests.helpers import build_model_dir, run_mlops


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """(model dir, test.csv, evaluation RMSE), built once per test session."""
    return build_model_dir(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private local state (store, endpoint records) for one test."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def serve(fitted, state):
    """Start an in-process server (one process, threads) on an ephemeral port; stopped after
    the test."""
    servers = []

    def start(capture_uri=None, sampling=100, limits=None, model_dir=None):
        server = make_server(model_dir or fitted[0], 0, capture_uri, "abalone-test", sampling,
                             limits)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()  # also closes the capture writer


@pytest.fixture(scope="module")
def staging(trained_state, tmp_path_factory):
    """A copy of the trained state with version 1 approved and deployed to staging, for one
    test module: (state directory, the endpoint's record). Stopped after the module."""
    state = tmp_path_factory.mktemp("staging") / "state"
    shutil.copytree(trained_state, state)
    assert run_mlops(state, "registry", "approve", "1").returncode == 0
    deployed = run_mlops(state, "deploy", "staging")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    yield state, json.loads((state / "endpoints" / "staging.json").read_text())
    run_mlops(state, "endpoint", "stop", "staging")
