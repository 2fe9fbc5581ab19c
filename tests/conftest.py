"""Fixtures shared by the test suites: the project's data set, its schema, its split, a model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlops_core import config
from model_build.scripts import preprocess, train
from tests.helpers import run_mlops

# No test may use real credentials or reach AWS: dummy ones, a fixed region, and no
# instance-metadata look-ups. moto-based tests add their own mock on top.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)
os.environ.pop("AWS_PROFILE", None)


def pytest_collection_modifyitems(items):
    """Every end-to-end test is `slow`, so `make test-fast` (-m "not slow") leaves it out."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)




@pytest.fixture(scope="session")
def trained_state(tmp_path_factory) -> Path:
    """A state directory after one successful `mlops pipeline run` (version 1 registered)."""
    state = tmp_path_factory.mktemp("trained-state")
    result = run_mlops(state, "pipeline", "run")
    assert result.returncode == 0, result.stdout + result.stderr
    return state


@pytest.fixture
def fresh_state(trained_state, tmp_path) -> Path:
    """A private copy of the trained state, for tests that change the registry or endpoints."""
    copy = tmp_path / "state"
    shutil.copytree(trained_state, copy)
    return copy


@pytest.fixture(scope="session")
def project_config() -> config.Config:
    return config.load()


@pytest.fixture(scope="session")
def schema(project_config) -> dict:
    return project_config.schema()


@pytest.fixture(scope="session")
def abalone_path(project_config) -> Path:
    return project_config.data_file


@pytest.fixture(scope="session")
def abalone(abalone_path) -> pd.DataFrame:
    return pd.read_csv(abalone_path)


@pytest.fixture(scope="session")
def abalone_split(tmp_path_factory, abalone_path, schema) -> Path:
    """A directory with train/train.csv, validation/validation.csv and test/test.csv."""
    root = tmp_path_factory.mktemp("split")
    raw, schema_file = root / "raw", root / "schema.json"
    raw.mkdir()
    (raw / abalone_path.name).write_bytes(abalone_path.read_bytes())
    schema_file.write_text(json.dumps(schema))
    preprocess.run(raw, schema_file, root)
    return root


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, abalone_split, schema, project_config) -> Path:
    """SM_MODEL_DIR after training on the split with mlops.toml's hyperparameters (the
    inference.py in it is a placeholder)."""
    root = tmp_path_factory.mktemp("training")
    (root / "schema").mkdir()
    (root / "schema" / "schema.json").write_text(json.dumps(schema))
    placeholder = root / "inference.py"
    placeholder.write_text("# placeholder for the serving script\n")
    hyperparameters = train.parse_hyperparameters(
        [f"--{k}={v}" for k, v in project_config.hyperparameters.items()]
    )
    model, _ = train.train(abalone_split / "train", abalone_split / "validation", schema,
                           hyperparameters)
    train.save_model(model, root / "model", root / "schema", placeholder)
    return root / "model"
