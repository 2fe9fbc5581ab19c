"""A model directory as the training job writes it, fitted here on abalone.csv.

The real model comes from `train.py`; these tests need a model of the same contract
(a Pipeline over the raw feature columns in schema order), fitted on a train split and
scored on a held-out split written as the preprocess step writes `test.csv`.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlops import config
from mlops.endpoint.server import make_server

ROOT = Path(__file__).resolve().parents[2]
INFERENCE_SCRIPT = ROOT / "model_build" / "scripts" / "inference.py"
TEST_ROWS = 600
# A linear model keeps the fixture quick to fit on a busy machine; serving is model-agnostic.


def build_model_dir(model_dir: Path) -> tuple[Path, Path, float]:
    """Fit, save model.joblib + schema.json + code/inference.py; returns the dir, the
    test split CSV and the model's RMSE on it."""
    cfg = config.load()
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
    """Start an in-process server on an ephemeral port; stopped after the test."""
    servers = []

    def start(capture_uri=None, sampling=100):
        server = make_server(fitted[0], 0, capture_uri, "abalone-test", sampling)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
        if server.endpoint.capture is not None:
            server.endpoint.capture.close()
