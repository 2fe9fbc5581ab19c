"""Fixtures shared by the test suites: the project's data set, its schema, its split, a model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mlops import config
from model_build.scripts import preprocess, train


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
