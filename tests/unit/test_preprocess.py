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
from tests.helpers import BROKEN, drop_column, set_cell

SCRIPT = Path(preprocess.__file__)
SPLITS = ("train", "validation", "test")


def _lines(abalone_path: Path) -> list[str]:
    return abalone_path.read_text().splitlines()







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
    lines = set_cell(set_cell(_lines(abalone_path), 0, "length", "x"), 1, "sex", "Q")
    problems, _ = _validate_lines(tmp_path, drop_column(lines, "shell_weight"), schema)
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
    (raw / "data.csv").write_text("\n".join(drop_column(_lines(abalone_path), "height")))
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
    lines = set_cell(set_cell(_lines(abalone_path), 2, "sex", "X"), 5, "rings", "-1")
    opt_ml = _container(tmp_path / "job", lines, schema)
    result = _run_script(opt_ml, cwd=tmp_path)
    assert result.returncode == 1
    message = (opt_ml / "output" / "message").read_text()
    assert "2 problem(s)" in message
    assert "column 'sex'" in message and "column 'rings'" in message
    assert "Traceback" not in result.stderr
    assert not any((opt_ml / "processing" / name).exists() for name in SPLITS)
