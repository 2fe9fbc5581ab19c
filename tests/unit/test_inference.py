"""The serving handlers, called as the scikit-learn container calls them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from model_build.scripts import inference
from tests.helpers import build_model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    model_dir, test_csv, _ = build_model_dir(tmp_path_factory.mktemp("unit") / "model")
    return inference.model_fn(str(model_dir)), pd.read_csv(test_csv)


def serve(model, body, content_type, accept):
    data = inference.input_fn(body, content_type)
    return inference.output_fn(inference.predict_fn(data, model), accept)


def csv_body(frame: pd.DataFrame) -> bytes:
    return frame.iloc[:, :-1].to_csv(header=False, index=False).encode()


def expected(model, frame: pd.DataFrame) -> np.ndarray:
    return model.pipeline.predict(frame[list(model.features)])


def test_csv_rows_answer_one_prediction_per_line(model):
    served, frame = model
    rows = frame.iloc[:25]
    body, content_type = serve(served, csv_body(rows), "text/csv", "text/csv")
    assert content_type == "text/csv"
    lines = body.splitlines()
    assert len(lines) == 25
    np.testing.assert_allclose([float(v) for v in lines], expected(served, rows))


def test_json_lists_and_objects_give_the_csv_predictions(model):
    served, frame = model
    rows = frame.iloc[:10]
    features = list(served.features)
    as_lists = {"instances": rows[features].values.tolist()}
    as_objects = {"instances": rows[features].to_dict(orient="records")}
    for document in (as_lists, as_objects):
        body, content_type = serve(
            served, json.dumps(document), "application/json; charset=utf-8", "application/json"
        )
        assert content_type == "application/json"
        np.testing.assert_allclose(json.loads(body)["predictions"], expected(served, rows))


def test_accept_picks_the_first_supported_type(model):
    served, frame = model
    body = csv_body(frame.iloc[:2])
    assert serve(served, body, "text/csv", "application/xml, text/csv;q=0.9")[1] == "text/csv"
    assert serve(served, body, "text/csv", "*/*")[1] == "application/json"


def _one_row(frame, column=None, value=None) -> list[str]:
    row = [str(v) for v in frame.iloc[0, :-1]]
    if column is not None:
        row[column] = value
    return row


def _csv_with(column=None, value=None):
    return lambda frame: ",".join(_one_row(frame, column, value))


BAD = inference.BadRequest
CSV, JSON = "text/csv", "application/json"


@pytest.mark.parametrize(
    ("make_body", "content_type", "error", "words"),
    [
        (lambda f: b"", CSV, BAD, ["empty"]),
        (lambda f: b"\n \n", CSV, BAD, ["empty"]),
        (lambda f: ",".join(_one_row(f)[:-1]), CSV, BAD, ["expected 8", "got 7"]),
        (_csv_with(1, "abc"), CSV, BAD, ["'length'", "abc"]),
        (_csv_with(2, "nan"), CSV, BAD, ["'diameter'", "nan"]),
        (_csv_with(3, "-inf"), CSV, BAD, ["'height'", "-inf"]),
        (_csv_with(0, "X"), CSV, BAD, ["'sex'", "'X'", "'M'"]),
        (lambda f: '{"instances": [[', JSON, BAD, ["malformed JSON"]),
        (lambda f: '[["M", 1]]', JSON, BAD, ["instances"]),
        (lambda f: '{"instances": [{"sex": "M"}]}', JSON, BAD, ["missing", "length"]),
        (lambda f: '{"instances": [[null, 1, 1, 1, 1, 1, 1, 1]]}', JSON, BAD, ["'sex'", "None"]),
        (lambda f: '{"instances": [["M", "x", 1, 1, 1, 1, 1, 1]]}', JSON, BAD, ["'length'"]),
        (lambda f: '{"instances": [["M", true, 1, 1, 1, 1, 1, 1]]}', JSON, BAD,
         ["'length'", "True", "not a number"]),
        (lambda f: '{"instances": [["M", [0.4], 1, 1, 1, 1, 1, 1]]}', JSON, BAD,
         ["'length'", "[0.4]", "not a number"]),
        (lambda f: '{"instances": [["M", 1e999, 1, 1, 1, 1, 1, 1]]}', JSON, BAD,
         ["'length'", "not a finite number"]),
        (lambda f: b"\xff\xfe", CSV, BAD, ["UTF-8"]),
        (_csv_with(), "application/x-npy", inference.UnsupportedContentType, ["x-npy"]),
        (_csv_with(), None, inference.UnsupportedContentType, ["None"]),
    ],
)
def test_bad_input_raises_a_message_naming_the_problem(
    model, make_body, content_type, error, words
):
    served, frame = model
    with pytest.raises(error) as raised:
        inference.predict_fn(inference.input_fn(make_body(frame), content_type), served)
    assert isinstance(raised.value, ValueError)
    for word in words:
        assert word in str(raised.value)


def test_the_bad_row_is_named_in_a_batch(model):
    served, frame = model
    rows = [_one_row(frame), _one_row(frame), _one_row(frame, 4, "heavy")]
    body = "\n".join(",".join(row) for row in rows)
    with pytest.raises(inference.BadRequest, match="row 3, column 'whole_weight'"):
        inference.predict_fn(inference.input_fn(body, "text/csv"), served)


def test_every_bad_row_is_reported_and_the_first_named(model, capsys):
    served, frame = model
    rows = [_one_row(frame), _one_row(frame, 0, "X"), _one_row(frame)[:-1],
            _one_row(frame, 1, "abc"), _one_row(frame, 0, "X")]
    body = "\n".join(",".join(row) for row in rows)
    with pytest.raises(inference.BadRequest) as raised:
        inference.predict_fn(inference.input_fn(body, "text/csv"), served)
    refusal = raised.value
    assert str(refusal).startswith("row 2, column 'sex': 'X' is an unknown category")
    assert "(4 of 5 rows are bad)" in str(refusal)
    assert [(p.row, p.reason, p.feature, p.value) for p in refusal.problems] == [
        (2, "unknown category", "sex", "X"), (3, "wrong column count", None, 7),
        (4, "not a number", "length", "abc"), (5, "unknown category", "sex", "X")]
    assert refusal.rows == 5
    logged = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert logged == {"event": "MLOPS_REFUSAL", "reason": "unknown category", "feature": "sex",
                      "rows": 5, "bad_rows": 4}


def test_unsupported_accept_is_refused_with_406(model):
    with pytest.raises(inference.UnsupportedAccept, match="application/xml") as raised:
        inference.output_fn(np.array([1.0]), "application/xml")
    assert raised.value.http_status == 406
    assert inference.BadRequest.http_status == 400
    assert inference.UnsupportedContentType.http_status == 415
