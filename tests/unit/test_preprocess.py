"""preprocess.py: validation of the raw CSV against the schema, and the split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from model_build.scripts import preprocess

SCRIPT = Path(preprocess.__file__)
SPLITS = ("train", "validation", "test")


def _lines(abalone_path: Path) -> list[str]:
    return abalone_path.read_text().splitlines()


def _set_cell(lines: list[str], row: int, column: str, value: str) -> list[str]:
    """A copy of the CSV lines with one data cell (0-based data row) replaced."""
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = value
    return lines[: row + 1] + [",".join(cells)] + lines[row + 2 :]


def _drop_column(lines: list[str], column: str) -> list[str]:
    index = lines[0].split(",").index(column)
    return [",".join(c for i, c in enumerate(line.split(",")) if i != index) for line in lines]


# Each broken copy: how to break the lines, and what the problem list must say.
# Data row r sits on file line r + 2 (the header is line 1).
BROKEN = {
    "missing column": (lambda ls: _drop_column(ls, "height"), ["column 'height' is missing"]),
    "missing target": (lambda ls: _drop_column(ls, "rings"), ["column 'rings' is missing"]),
    "text in numeric": (
        lambda ls: _set_cell(ls, 4, "length", "abc"),
        ["column 'length'", "1 row (line 6)", "'abc'", "not finite numbers"],
    ),
    "infinite number": (
        lambda ls: _set_cell(ls, 0, "diameter", "inf"),
        ["column 'diameter'", "line 2", "not finite numbers"],
    ),
    "unknown category": (
        lambda ls: _set_cell(ls, 9, "sex", "X"),
        ["column 'sex'", "line 11", "'X'", "allowed values"],
    ),
    "missing values": (
        lambda ls: _set_cell(_set_cell(_set_cell(ls, 1, "whole_weight", ""), 2, "whole_weight",
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
        lambda ls: _set_cell(ls, 7, "rings", "-3"),
        ["column 'rings'", "line 9", "negative"],
    ),
    "duplicate column": (
        lambda ls: [ls[0] + ",sex"] + [line + ",M" for line in ls[1:]],
        ["column 'sex' appears more than once"],
    ),
}


def _validate_lines(tmp_path: Path, lines: list[str], schema: dict):
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return preprocess.validate(preprocess.read_raw(path), schema)


def test_real_data_passes(abalone_path, schema):
    table = preprocess.read_raw(abalone_path)
    problems, extra = preprocess.validate(table, schema)
    assert problems == [] and extra == []
    assert len(table.rows) == 4177


@pytest.mark.parametrize("case", BROKEN)
def test_broken_copy_fails_naming_the_problem(case, tmp_path, abalone_path, schema):
    breaker, expected = BROKEN[case]
    problems, _ = _validate_lines(tmp_path, breaker(_lines(abalone_path)), schema)
    assert len(problems) == 1, problems
    for text in expected:
        assert text in problems[0].message


def test_every_problem_is_collected(tmp_path, abalone_path, schema):
    lines = _set_cell(_set_cell(_lines(abalone_path), 0, "length", "x"), 1, "sex", "Q")
    problems, _ = _validate_lines(tmp_path, _drop_column(lines, "shell_weight"), schema)
    assert sorted(p.column for p in problems) == ["length", "sex", "shell_weight"]


def test_extra_column_is_reported_not_failed(tmp_path, abalone_path, schema):
    lines = _lines(abalone_path)
    lines = [lines[0] + ",note"] + [line + ",ok" for line in lines[1:]]
    problems, extra = _validate_lines(tmp_path, lines, schema)
    assert problems == [] and extra == ["note"]


def test_split_is_reproducible_and_complete(tmp_path, abalone_path, abalone, schema):
    parts = [
        preprocess.split(preprocess.to_frame(preprocess.read_raw(abalone_path), schema), schema)
        for _ in range(2)
    ]
    for name in SPLITS:
        pd.testing.assert_frame_equal(parts[0][name], parts[1][name])
    sizes = {name: len(part) for name, part in parts[0].items()}
    assert sizes == {"train": 2923, "validation": 627, "test": 627}
    rejoined = pd.concat(parts[0].values()).sort_index()
    pd.testing.assert_frame_equal(rejoined, abalone, check_dtype=False)


def test_seed_changes_the_split(abalone_path, schema):
    frame = preprocess.to_frame(preprocess.read_raw(abalone_path), schema)
    first = preprocess.split(frame, schema)["test"].index
    second = preprocess.split(frame, {**schema, "seed": schema["seed"] + 1})["test"].index
    assert not first.equals(second)


def test_run_writes_splits_in_schema_order(abalone_split, schema):
    columns = [f["name"] for f in schema["features"]] + [schema["target"]]
    for name in SPLITS:
        assert list(pd.read_csv(abalone_split / name / f"{name}.csv").columns) == columns
    report = json.loads((abalone_split / "report" / "validation_report.json").read_text())
    assert report["status"] == "passed" and report["rows"] == 4177


def test_run_on_bad_data_writes_report_and_no_split(tmp_path, abalone_path, schema):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "data.csv").write_text("\n".join(_drop_column(_lines(abalone_path), "height")))
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(preprocess.DataError, match="column 'height' is missing"):
        preprocess.run(raw, tmp_path / "schema.json", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report" / "validation_report.json").read_text())
    assert report["status"] == "failed"
    assert report["problems"] == [{"column": "height", "message": "column 'height' is missing"}]
    assert not any((tmp_path / "out" / name).exists() for name in SPLITS)


def test_input_directory_must_hold_one_csv(tmp_path):
    with pytest.raises(preprocess.DataError, match="exactly one .csv file .* found none"):
        preprocess.find_input_csv(tmp_path)


def _container(root: Path, lines: list[str], schema: dict) -> Path:
    """A processing job's OPT_ML as the container (or the local engine) lays it out."""
    data, schema_dir = root / "processing/input/data", root / "processing/input/schema"
    data.mkdir(parents=True)
    schema_dir.mkdir(parents=True)
    (data / "abalone.csv").write_text("\n".join(lines) + "\n")
    (schema_dir / "schema.json").write_text(json.dumps(schema))
    return root


def _run_script(opt_ml: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "MLOPS_OPT_ML": str(opt_ml)}, timeout=60,
    )


def test_script_splits_good_data(tmp_path, abalone_path, schema):
    opt_ml = _container(tmp_path / "job", _lines(abalone_path), schema)
    result = _run_script(opt_ml, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in SPLITS:
        assert len(pd.read_csv(opt_ml / "processing" / name / f"{name}.csv")) > 600
    assert not (opt_ml / "output" / "message").exists()


def test_script_fails_on_bad_data_with_message(tmp_path, abalone_path, schema):
    lines = _set_cell(_set_cell(_lines(abalone_path), 2, "sex", "X"), 5, "rings", "-1")
    opt_ml = _container(tmp_path / "job", lines, schema)
    result = _run_script(opt_ml, cwd=tmp_path)
    assert result.returncode == 1
    message = (opt_ml / "output" / "message").read_text()
    assert "2 problem(s)" in message
    assert "column 'sex'" in message and "column 'rings'" in message
    assert "Traceback" not in result.stderr
    assert not any((opt_ml / "processing" / name).exists() for name in SPLITS)
