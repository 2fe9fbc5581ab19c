"""The data contract, and that every place that reads cells agrees with it on every cell."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest

from model_build.scripts import baseline, contract, inference, preprocess

# (cell, what a numeric column makes of it: a number, or the contract's word for it)
NUMERIC_CELLS = [
    ("0.455", 0.455), (" 12 ", 12.0), ("1e-3", 0.001), (3, 3.0), (2.5, 2.5),
    ("", "a missing value"), ("NA", "a missing value"), ("n/a", "a missing value"),
    ("nan", "a missing value"), ("NULL", "a missing value"), ("None", "a missing value"),
    (None, "a missing value"), (float("nan"), "a missing value"),
    ("abc", "not a number"), (True, "not a number"), ([1], "not a number"),
    ("inf", "not a finite number"), ("-Infinity", "not a finite number"),
    (10**400, "not a finite number"), ("1" * 400, "not a finite number"),
]


@pytest.mark.parametrize(("cell", "meaning"), NUMERIC_CELLS)
def test_a_numeric_cell_means_one_thing(cell, meaning):
    if isinstance(meaning, float):
        assert contract.to_number(cell) == meaning
    else:
        with pytest.raises(contract.ContractError, match=f"^{meaning}$"):
            contract.to_number(cell)


def test_categories_and_missing_values():
    assert contract.to_category(" M ", ("M", "F")) == "M"
    with pytest.raises(contract.ContractError, match="a missing value"):
        contract.to_category("n/a", ("M", "F"))
    with pytest.raises(contract.ContractError, match=r"an unknown category; allowed \['M', 'F'\]"):
        contract.to_category("X", ("M", "F"))


def test_columns_agree_with_cells():
    text = [c for c, _ in NUMERIC_CELLS if isinstance(c, str)]
    column = pd.Series(text, dtype=str)
    missing = contract.missing_mask(column)
    values = contract.numbers(column)
    for cell, gone, value in zip(text, missing, values, strict=True):
        assert gone == contract.is_missing(cell)
        try:
            assert value == contract.to_number(cell)
        except contract.ContractError:
            assert np.isnan(value)


@pytest.mark.parametrize("cell", ["", "NA", "nan", " none ", "abc", "inf"])
def test_preprocess_serving_and_baseline_agree_on_a_bad_cell(cell, schema):
    """A cell the training data may not hold is one the endpoint refuses and the baseline
    cannot count as a number: the same rule in every job."""
    missing = contract.is_missing(cell)
    problems = preprocess.check_numeric("length", [cell], [2], target=False)
    assert bool(problems) == (not missing)  # a missing cell is reported as missing instead
    model = inference.ServingModel(None, tuple(contract.feature_names(schema)),
                                   contract.categories(schema))
    row = ["M", cell, "0.4", "0.1", "0.5", "0.2", "0.1", "0.15"]
    with pytest.raises(inference.BadRequest, match="column 'length'"):
        inference.checked_columns([row], model)
    cells = pd.Series(["0.5", cell, "0.6"], dtype=str)
    if missing:  # counted as missing, not parsed
        common = baseline.numeric_statistics("length", cells)["numerical_statistics"]["common"]
        assert (common["num_present"], common["num_missing"]) == (2, 1)
    else:
        with pytest.raises(baseline.BaselineError, match="'length' has 1 value"):
            baseline.numeric_statistics("length", cells)


def test_schema_problems_are_named(tmp_path):
    path = tmp_path / "schema.json"
    with pytest.raises(contract.ContractError, match="schema file not found"):
        contract.load_schema(path)
    path.write_text("{")
    with pytest.raises(contract.ContractError, match="is not valid JSON"):
        contract.load_schema(path)
    path.write_text(json.dumps({"target": "y", "features": [{"name": "a", "type": "text"}],
                                "seed": 1, "validation_fraction": 0.1, "test_fraction": 0.1}))
    with pytest.raises(contract.ContractError, match="needs a name and a type"):
        contract.load_schema(tmp_path)  # a directory means its schema.json


def test_categories_compare_by_value():
    """A JSON number, a CSV cell and the configured value that mean one value are one
    category, spelled as configured; other text compares as text."""
    allowed = ("1.0", "2.0", "M")
    for cell in (2, 2.0, "2", "2.0", " 2.00 ", "2e0"):
        assert contract.to_category(cell, allowed) == "2.0"
    assert contract.to_category(" M", allowed) == "M"
    for cell in ("m", "3", 3, True):
        with pytest.raises(contract.ContractError):
            contract.to_category(cell, allowed)
    column = pd.Series(["1", "2.0", "x", " M "], dtype=str)
    assert list(contract.categories_of(column, allowed)) == ["1.0", "2.0", "x", "M"]


def test_numeric_looking_categories_through_preprocess_and_serving(schema):
    """A schema whose category values look like numbers: the training CSV's '2' is the
    configured '2.0', and a JSON request's 2.0 is served as that category."""
    numeric_looking = {**schema, "features": [
        {"name": "sex", "type": "categorical", "values": ["1.0", "2.0", "3.0"]},
        *schema["features"][1:]]}
    assert preprocess.check_categorical("sex", ["1.0", "2.0", "3.0"], ["2", "1.0", "4"],
                                        [2, 3, 4])[0].message.startswith(
        "column 'sex': 1 row (line 4), e.g. '4'")
    model = inference.ServingModel(None, tuple(contract.feature_names(numeric_looking)),
                                   contract.categories(numeric_looking))
    columns = inference.checked_columns([[2.0, 0.5, 0.4, 0.1, 0.5, 0.2, 0.1, 0.15],
                                         ["1", 0.5, 0.4, 0.1, 0.5, 0.2, 0.1, 0.15]], model)
    assert columns["sex"] == ["2.0", "1.0"]


@pytest.mark.parametrize("text", [
    "M,0.4,1\nF,0.5,2\n", "M,0.4,1\n\n\nF,0.5,2", "\nM,0.4,1\n", "M,0.4,1\r\nF,0.5,2\r\n",
    'M,"0.4",1\n"F,x",0.5,2\n', 'M,"line\nbreak",1\n', "M, 0.4 ,1,\n,,\n", "M,\x0c0.4,1\n",
])
def test_csv_rows_are_what_csv_reader_reads(text):
    assert contract.csv_rows(text) == [row for row in csv.reader(io.StringIO(text)) if row]
