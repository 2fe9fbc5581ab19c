"""Processing step "validate and preprocess": check the raw CSV against the schema, then split it.

Runs in the SageMaker scikit-learn container, so it imports only the standard library,
numpy, pandas and the data contract shipped with it.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

try:
    import contract  # shipped with the job
except ImportError:
    from model_build.scripts import contract

MAX_EXAMPLES = 5


class DataError(Exception):
    """The input cannot be read at all (no file, unreadable schema); the message says why."""


@dataclass(frozen=True)
class Problem:
    column: str | None
    message: str


@dataclass
class RawTable:
    header: list[str]
    rows: list[list[str]]
    lines: list[int]  # file line of each data row, for messages a person can act on


def load_schema(path: Path) -> dict:
    try:
        return contract.load_schema(path)
    except contract.ContractError as err:
        raise DataError(str(err)) from None


def find_input_csv(directory: Path) -> Path:
    files = sorted(Path(directory).glob("*.csv"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise DataError(f"expected exactly one .csv file in {directory}, found {found}")
    return files[0]


def read_raw(path: Path) -> RawTable:
    """Read every cell as text; blank lines are skipped, everything else is kept for checks."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header: list[str] | None = None
            rows, lines = [], []
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                if header is None:
                    header = [cell.strip() for cell in record]
                else:
                    rows.append(record)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        raise DataError(f"{path.name} is not UTF-8 text: {err}") from None
    except csv.Error as err:
        raise DataError(f"{path.name} is not a readable CSV file: {err}") from None
    return RawTable(header or [], rows, lines)


def _describe(lines: list[int], values: list[str] | None = None) -> str:
    shown = lines[:MAX_EXAMPLES]
    where = ", ".join(str(n) for n in shown) + (", ..." if len(lines) > len(shown) else "")
    text = f"{len(lines)} row{'s' if len(lines) != 1 else ''} (line {where})"
    if values:
        text += ", e.g. " + ", ".join(repr(v) for v in values[:3])
    return text


def check_structure(table: RawTable, schema: dict) -> tuple[list[Problem], list[str]]:
    """Problems with the file's shape and header; also returns the extra (ignored) columns."""
    expected = [f["name"] for f in schema["features"]] + [schema["target"]]
    if not table.header:
        return [Problem(None, "the file is empty")], []
    if not set(table.header) & set(expected):
        return [
            Problem(
                None,
                "no header row: the first line names none of the schema columns "
                f"({', '.join(expected)})",
            )
        ], []
    problems = []
    duplicates = sorted({name for name in table.header if table.header.count(name) > 1})
    for name in duplicates:
        problems.append(Problem(name, f"column '{name}' appears more than once in the header"))
    for name in expected:
        if name not in table.header:
            problems.append(Problem(name, f"column '{name}' is missing"))
    if not table.rows:
        problems.append(Problem(None, "the file has a header but no data rows"))
    width = len(table.header)
    ragged = [line for line, row in zip(table.lines, table.rows, strict=True) if len(row) != width]
    if ragged:
        problems.append(
            Problem(
                None,
                f"{_describe(ragged)} do not have {width} fields like the header",
            )
        )
    extra = [name for name in table.header if name not in expected]
    return problems, extra


def _column(table: RawTable, name: str) -> tuple[list[str], list[int]]:
    """The column's cells from the rows that have the header's width."""
    index = table.header.index(name)
    width = len(table.header)
    cells = [(row[index].strip(), line) for row, line in zip(table.rows, table.lines, strict=True)
             if len(row) == width]
    return [c for c, _ in cells], [line for _, line in cells]


def check_numeric(name: str, cells: list[str], lines: list[int], *, target: bool) -> list[Problem]:
    problems = []
    bad, bad_values, negative = [], [], []
    for cell, line in zip(cells, lines, strict=True):
        if contract.is_missing(cell):
            continue
        try:
            value = contract.to_number(cell)
        except contract.ContractError:
            bad.append(line)
            bad_values.append(cell)
            continue
        if target and value < 0:
            negative.append(line)
    if bad:
        problems.append(Problem(name, f"column '{name}': {_describe(bad, bad_values)} "
                                      "are not finite numbers"))
    if negative:
        problems.append(Problem(name, f"column '{name}': {_describe(negative)} are negative; "
                                      "the target must be non-negative"))
    return problems


def check_categorical(name: str, allowed: list[str], cells: list[str],
                      lines: list[int]) -> list[Problem]:
    known = contract.category_lookup(allowed)
    unknown = [(cell, line) for cell, line in zip(cells, lines, strict=True)
               if not contract.is_missing(cell) and contract.category_key(cell) not in known]
    if not unknown:
        return []
    values = sorted({cell for cell, _ in unknown})
    return [Problem(name, f"column '{name}': {_describe([line for _, line in unknown], values)} "
                          f"are not one of the allowed values {allowed}")]


def check_cells(table: RawTable, schema: dict) -> list[Problem]:
    """Per-column problems: missing values, unparsable numbers, unknown categories."""
    problems = []
    columns = [(f["name"], f) for f in schema["features"]] + [(schema["target"], None)]
    for name, feature in columns:
        if name not in table.header or table.header.count(name) > 1:
            continue
        cells, lines = _column(table, name)
        missing = [line for cell, line in zip(cells, lines, strict=True)
                   if contract.is_missing(cell)]
        if missing:
            problems.append(Problem(name, f"column '{name}': {_describe(missing)} "
                                          "have a missing value"))
        if feature is None:
            problems += check_numeric(name, cells, lines, target=True)
        elif feature["type"] == "numeric":
            problems += check_numeric(name, cells, lines, target=False)
        else:
            problems += check_categorical(name, feature["values"], cells, lines)
    return problems


def validate(table: RawTable, schema: dict) -> tuple[list[Problem], list[str]]:
    """Every problem found in the table (empty when it is usable), and its extra columns."""
    problems, extra = check_structure(table, schema)
    expected = {f["name"] for f in schema["features"]} | {schema["target"]}
    if set(table.header) & expected:
        problems += check_cells(table, schema)
    return problems, extra


def to_frame(table: RawTable, schema: dict) -> pd.DataFrame:
    """The validated table with features in schema order, target last, numbers parsed."""
    raw = pd.DataFrame(table.rows, columns=table.header)
    frame = pd.DataFrame(index=raw.index)
    for feature in schema["features"]:
        cells = raw[feature["name"]].str.strip()
        frame[feature["name"]] = (pd.to_numeric(cells) if feature["type"] == "numeric"
                                  else contract.categories_of(cells, feature["values"]))
    frame[schema["target"]] = pd.to_numeric(raw[schema["target"]].str.strip())
    return frame


def split(frame: pd.DataFrame, schema: dict) -> dict[str, pd.DataFrame]:
    """Reproducible train/validation/test split by the schema's seed and fractions.

    Rows keep their original order inside each part, so a split is easy to diff.
    """
    n = len(frame)
    n_test = int(round(n * schema["test_fraction"]))
    n_validation = int(round(n * schema["validation_fraction"]))
    if n - n_test - n_validation < 1:
        raise DataError(f"{n} rows are too few to split with the schema's fractions")
    order = np.random.default_rng(schema["seed"]).permutation(n)
    parts = {
        "test": order[:n_test],
        "validation": order[n_test : n_test + n_validation],
        "train": order[n_test + n_validation :],
    }
    return {name: frame.iloc[np.sort(rows)] for name, rows in parts.items()}


def build_report(source: Path, table: RawTable, problems: list[Problem],
                 extra: list[str]) -> dict:
    return {
        "status": "failed" if problems else "passed",
        "source": source.name,
        "rows": len(table.rows),
        "problems": [asdict(p) for p in problems],
        "extra_columns": extra,
    }


def failure_message(source: Path, problems: list[Problem]) -> str:
    lines = [f"{source.name} failed validation with {len(problems)} problem(s):"]
    lines += [f"- {p.message}" for p in problems]
    return "\n".join(lines) + "\n"


def run(data_dir: Path, schema_path: Path, output_dir: Path) -> dict:
    """Validate and split; returns the report. Raises DataError (with the full message) on
    bad data, after writing the report but before writing any split."""
    schema = load_schema(schema_path)
    source = find_input_csv(data_dir)
    table = read_raw(source)
    problems, extra = validate(table, schema)
    report = build_report(source, table, problems, extra)
    contract.write_text(output_dir / "report" / "validation_report.json",
                        json.dumps(report, indent=2))
    if problems:
        raise DataError(failure_message(source, problems))
    for name, part in split(to_frame(table, schema), schema).items():
        contract.write_text(output_dir / name / f"{name}.csv", part.to_csv(index=False))
    return report


def main() -> int:
    processing = contract.opt_ml() / "processing"
    try:
        report = run(processing / "input" / "data", processing / "input" / "schema" /
                     contract.SCHEMA_FILE, processing)
    except DataError as err:
        return contract.fail(str(err).rstrip())
    note = f"; extra columns ignored: {report['extra_columns']}" if report["extra_columns"] else ""
    print(f"validated {report['rows']} rows of {report['source']}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
