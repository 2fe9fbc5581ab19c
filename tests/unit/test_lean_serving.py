"""The lean serving path predicts what the Pipeline predicts, for every regressor train.py
fits; a model of another shape is served through its Pipeline, and the log says so."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from mlops_core import config as project_config
from model_build.scripts import contract, inference, train

CONFIG = project_config.load()


@pytest.fixture(scope="module")
def rows(abalone):
    """Every row of the data set as the endpoint receives it (cells as text)."""
    features = abalone[CONFIG.feature_names]
    return features, [[str(v) for v in row] for row in features.itertuples(index=False)]


def _serving(model_dir):
    return inference.model_fn(model_dir)


@pytest.mark.parametrize("candidate", sorted(CONFIG.candidates))
def test_lean_path_equals_the_pipeline_on_the_whole_data_set(candidate, abalone_split, schema,
                                                             rows, tmp_path, capsys):
    settings = train.parse_hyperparameters(
        [f"--{k}={v}" for k, v in CONFIG.candidates[candidate].items()])
    pipeline, _ = train.train(abalone_split / "train", abalone_split / "validation", schema,
                              settings)
    (tmp_path / contract.SCHEMA_FILE).write_text((abalone_split / "schema.json").read_text())
    joblib.dump(pipeline, tmp_path / "model.joblib")
    served = _serving(tmp_path)
    assert served.lean is not None
    assert "serving on the lean path" in capsys.readouterr().err
    frame, cells = rows
    lean = inference.predict_fn(inference.Rows(cells), served)
    reference = pipeline.predict(frame)
    assert np.max(np.abs(lean - reference)) <= 1e-9


def test_unseen_category_is_all_zeros_as_in_the_pipeline(trained_model_dir, rows):
    served = _serving(trained_model_dir)
    frame, cells = rows
    schema_allows = dict(served.lean.blocks[0][2])  # the one-hot block of 'sex'
    assert set(schema_allows) == set(served.categories["sex"])
    row = cells[:1]
    assert inference.predict_fn(inference.Rows(row), served) == pytest.approx(
        served.pipeline.predict(frame.iloc[:1]), abs=1e-9)


def test_another_model_shape_is_served_through_its_pipeline(trained_model_dir, tmp_path, rows,
                                                            capsys):
    frame, cells = rows
    odd = make_pipeline(ColumnTransformer([("sex", OrdinalEncoder(), CONFIG.categorical)],
                                          remainder="passthrough"), Ridge())
    odd.fit(frame.iloc[:200], np.arange(200.0))
    (tmp_path / contract.SCHEMA_FILE).write_text(
        (trained_model_dir / contract.SCHEMA_FILE).read_text())
    joblib.dump(odd, tmp_path / "model.joblib")
    served = _serving(tmp_path)
    assert served.lean is None
    assert "serving through the Pipeline's predict: its step 'sex' is a OrdinalEncoder" \
        in capsys.readouterr().err
    np.testing.assert_allclose(inference.predict_fn(inference.Rows(cells[:5]), served),
                               odd.predict(frame.iloc[:5]))
