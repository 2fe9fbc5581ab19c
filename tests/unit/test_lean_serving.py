"""The lean serving path predicts what the Pipeline predicts, for every regressor train.py
fits; a model of another shape is served through its Pipeline, and the log says so."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

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


def _served(pipeline, schema_dir, model_dir):
    """`pipeline` saved as a model beside the schema in `schema_dir`, as model_fn loads it."""
    (model_dir / contract.SCHEMA_FILE).write_text((schema_dir / contract.SCHEMA_FILE).read_text())
    joblib.dump(pipeline, model_dir / "model.joblib")
    return _serving(model_dir)


def _csv(cells: list) -> inference.Rows:
    return inference.input_fn("".join(",".join(row) + "\n" for row in cells), "text/csv")


@pytest.mark.parametrize("candidate", sorted(CONFIG.candidates))
@pytest.mark.parametrize("route", ["csv", "checked"])
def test_lean_path_equals_the_pipeline_on_the_whole_data_set(candidate, route, abalone_split,
                                                             schema, rows, tmp_path, capsys):
    """Both routes to the estimator's matrix: a CSV body's (read at once when every row is
    well formed) and the checked columns' (JSON rows, or text spelled otherwise)."""
    settings = train.parse_hyperparameters(
        [f"--{k}={v}" for k, v in CONFIG.candidates[candidate].items()])
    pipeline, _ = train.train(abalone_split / "train", abalone_split / "validation", schema,
                              settings)
    served = _served(pipeline, abalone_split, tmp_path)
    assert served.lean is not None
    assert "serving on the lean path" in capsys.readouterr().err
    frame, cells = rows
    request = _csv(cells) if route == "csv" else inference.Rows(cells)
    assert request.text is (route == "csv")
    lean = inference.predict_fn(request, served)
    reference = pipeline.predict(frame)
    assert np.max(np.abs(lean - reference)) <= 1e-9
    if route == "csv":  # small requests are read row by row
        few = inference.FEW_ROWS
        for start in range(0, 30 * few, few):
            small = inference.predict_fn(_csv(cells[start:start + few]), served)
            assert np.max(np.abs(small - reference[start:start + few])) <= 1e-9
        for number in range(20):
            one = inference.predict_fn(_csv(cells[number:number + 1]), served)
            assert abs(one[0] - reference[number]) <= 1e-9


def test_a_value_the_encoder_never_saw_is_all_zeros_as_in_the_pipeline(trained_model_dir, rows,
                                                                      tmp_path):
    frame, cells = rows
    without_males = make_pipeline(
        ColumnTransformer([("sex", OneHotEncoder(categories=[["F", "I"]], handle_unknown="ignore"),
                            CONFIG.categorical)], remainder=StandardScaler()), Ridge())
    known = frame["sex"] != "M"
    without_males.fit(frame[known], np.arange(float(known.sum())))
    served = _served(without_males, trained_model_dir, tmp_path)
    (name, _, columns), = served.lean.onehots
    assert name == "sex" and columns["M"] == -1
    males = [row for row in cells if row[0] == "M"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the encoder warns of the unknown value it ignores
        reference = without_males.predict(frame[~known])
    for request in (_csv(males), inference.Rows(males)):
        assert np.max(np.abs(inference.predict_fn(request, served) - reference)) <= 1e-9
    assert abs(inference.predict_fn(_csv(males[:1]), served)[0] - reference[0]) <= 1e-9


def test_a_scaler_that_does_not_centre_is_read_as_it_transforms(trained_model_dir, rows,
                                                                tmp_path):
    frame, cells = rows
    uncentred = make_pipeline(
        ColumnTransformer([("sex", OneHotEncoder(handle_unknown="ignore"), CONFIG.categorical)],
                          remainder=StandardScaler(with_mean=False)), Ridge())
    uncentred.fit(frame, np.arange(float(len(frame))))
    served = _served(uncentred, trained_model_dir, tmp_path)
    assert served.lean is not None and not served.lean.offset.any()
    reference = uncentred.predict(frame)
    for request in (_csv(cells), _csv(cells[:3]), inference.Rows(cells)):
        predicted = inference.predict_fn(request, served)
        assert np.max(np.abs(predicted - reference[:len(predicted)])) <= 1e-9


def test_another_model_shape_is_served_through_its_pipeline(trained_model_dir, tmp_path, rows,
                                                            capsys):
    frame, cells = rows
    odd = make_pipeline(ColumnTransformer([("sex", OrdinalEncoder(), CONFIG.categorical)],
                                          remainder="passthrough"), Ridge())
    odd.fit(frame.iloc[:200], np.arange(200.0))
    served = _served(odd, trained_model_dir, tmp_path)
    assert served.lean is None
    assert "serving through the Pipeline's predict: its step 'sex' is a OrdinalEncoder" \
        in capsys.readouterr().err
    np.testing.assert_allclose(inference.predict_fn(inference.Rows(cells[:5]), served),
                               odd.predict(frame.iloc[:5]))


def _outcome(request, served):
    try:
        return inference.predict_fn(request, served).tolist()
    except inference.BadRequest as err:
        return str(err)


@pytest.fixture(scope="module")
def long_body(rows):
    """Fifty rows as one CSV body: more than FEW_ROWS, so it is read whole."""
    return [",".join(row) for row in rows[1][:50]]


@pytest.mark.parametrize("spelling", [
    "plain", "no final newline", "blank lines", "every field quoted"])
def test_a_long_body_predicts_what_its_rows_predict(trained_model_dir, long_body, spelling,
                                                    capsys):
    served = _serving(trained_model_dir)
    body = {
        "plain": "\n".join(long_body) + "\n",
        "no final newline": "\n".join(long_body),
        "blank lines": "\n\n" + "\n\n".join(long_body) + "\n\n",
        "every field quoted": "".join(
            ",".join(f'"{cell}"' for cell in line.split(",")) + "\n" for line in long_body),
    }[spelling]
    request = inference.input_fn(body, "text/csv")
    quoted = spelling == "every field quoted"
    assert request.text and (request.plain is None) is quoted
    read_whole = served.lean.text_matrix(request)
    assert (read_whole is None) is quoted  # a quoted field is for the checked route to read
    checked = inference.Rows([line.split(",") for line in long_body])
    assert _outcome(request, served) == _outcome(checked, served)


def _row_37(spell):
    return lambda lines: [*lines[:36], ",".join(spell(lines[36].split(","))), *lines[37:]]


@pytest.mark.parametrize("misspell", [
    _row_37(lambda cells: cells[:-1]), _row_37(lambda cells: [*cells, "1"]),
    _row_37(lambda cells: ["X", *cells[1:]]), _row_37(lambda cells: [" M", *cells[1:]]),
    _row_37(lambda cells: [cells[0], "abc", *cells[2:]]),
    _row_37(lambda cells: [cells[0], "nan", *cells[2:]]),
    _row_37(lambda cells: [cells[0], "1e999", *cells[2:]]),
    _row_37(lambda cells: [cells[0], "", *cells[2:]]),
    _row_37(lambda cells: [cells[0], "1_0", *cells[2:]]),
    _row_37(lambda cells: ["   "]),
    # a category too many in row 37 and none in row 38: the same number of cells in all
    lambda lines: [*lines[:36], lines[36] + ",M", lines[37].split(",", 1)[1], *lines[38:]],
])
def test_a_long_body_refuses_or_reads_a_bad_row_as_the_checked_route(
        trained_model_dir, long_body, misspell, capsys):
    """Row 37 spelled oddly: the whole body's reading gives the checked route's answer, the
    same predictions or the same refusal naming row 37."""
    served = _serving(trained_model_dir)
    lines = misspell(long_body)
    request = inference.input_fn("\n".join(lines) + "\n", "text/csv")
    outcome = _outcome(request, served)
    assert outcome == _outcome(inference.Rows([line.split(",") for line in lines]), served)
    assert isinstance(outcome, list) or outcome.startswith("row 37")
