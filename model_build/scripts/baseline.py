"""Processing step "data-quality baseline": statistics and constraints of the feature columns.

Writes `statistics.json` and `constraints.json` in SageMaker Model Monitor's formats, so the
registered model package can name them as its drift-check baselines and the monitoring job
(`model_deploy/monitoring/drift_check.py`, or Model Monitor itself) can compare traffic with them.

Runs in the SageMaker scikit-learn container, so it imports only the standard library, numpy
and pandas. Container paths are under OPT_ML (``$MLOPS_OPT_ML`` or ``/opt/ml``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HISTOGRAM_BUCKETS = 10  # Model Monitor materialises its KLL distribution in 10 buckets
SKETCH_K = 2048  # items kept by the quantile sketch; more rows are compacted to K quantiles
SKETCH_C = 0.64
MONITORING_CONFIG = {
    "evaluate_constraints": "Enabled",
    "emit_metrics": "Enabled",
    "datatype_check_threshold": 0.1,
    "domain_content_threshold": 0.1,
    "distribution_constraints": {
        "perform_comparison": "Enabled",
        "comparison_threshold": 0.1,
        "comparison_method": "Robust",
        "categorical_comparison_threshold": 0.1,
        "categorical_drift_method": "LInfinity",
    },
}


class BaselineError(Exception):
    """The inputs cannot be baselined; the message names the problem."""


def load_schema(path: Path) -> dict:
    try:
        schema = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BaselineError(f"schema file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise BaselineError(f"schema file {path} is not valid JSON: {err}") from None
    if not schema.get("features"):
        raise BaselineError(f"schema file {path} lists no 'features'")
    return schema


def load_features(path: Path, schema: dict) -> pd.DataFrame:
    """The feature columns of the training CSV, in schema order, read as text."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BaselineError(f"training data not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BaselineError(f"{path} is not a readable CSV file: {err}") from None
    names = [f["name"] for f in schema["features"]]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise BaselineError(f"{path.name} has no column(s) {missing}; the schema needs {names}")
    if frame.empty:
        raise BaselineError(f"{path.name} has no data rows")
    return frame[names]


def _present(cells: pd.Series) -> pd.Series:
    return cells.str.strip().ne("")


def _numbers(name: str, cells: pd.Series) -> np.ndarray:
    values = pd.to_numeric(cells, errors="coerce")
    bad = cells[values.isna()]
    if len(bad):
        raise BaselineError(
            f"numeric feature '{name}' has {len(bad)} non-numeric value(s), e.g. {bad.iloc[0]!r}"
        )
    return values.to_numpy(dtype=float)


def quantile_sketch(values: np.ndarray) -> list[float]:
    """The sorted values, or K evenly spaced quantiles of them: the CDF a drift check rebuilds."""
    ordered = np.sort(values)
    if len(ordered) > SKETCH_K:
        ordered = np.quantile(ordered, (np.arange(SKETCH_K) + 0.5) / SKETCH_K)
    return [float(v) for v in ordered]


def histogram(values: np.ndarray) -> list[dict]:
    low, high = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=HISTOGRAM_BUCKETS, range=(low, high))
    return [
        {"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]),
         "count": float(counts[i])}
        for i in range(HISTOGRAM_BUCKETS)
    ]


def numeric_statistics(name: str, cells: pd.Series) -> dict:
    present = cells[_present(cells)]
    common = {"num_present": int(len(present)), "num_missing": int(len(cells) - len(present))}
    if present.empty:
        raise BaselineError(f"numeric feature '{name}' has no values")
    values = _numbers(name, present)
    integral = bool(np.all(np.mod(values, 1) == 0))
    return {
        "name": name,
        "inferred_type": "Integral" if integral else "Fractional",
        "numerical_statistics": {
            "common": common,
            "mean": float(values.mean()),
            "sum": float(values.sum()),
            "std_dev": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "distribution": {
                "kll": {
                    "buckets": histogram(values),
                    "sketch": {
                        "parameters": {"c": SKETCH_C, "k": float(SKETCH_K)},
                        "data": [quantile_sketch(values)],
                    },
                }
            },
        },
    }


def string_statistics(name: str, cells: pd.Series) -> dict:
    present = cells[_present(cells)].str.strip()
    counts = present.value_counts()
    return {
        "name": name,
        "inferred_type": "String",
        "string_statistics": {
            "common": {"num_present": int(len(present)),
                       "num_missing": int(len(cells) - len(present))},
            "distinct_count": float(len(counts)),
            "distribution": {
                "categorical": {
                    "buckets": [{"value": str(v), "count": float(c)} for v, c in counts.items()]
                }
            },
        },
    }


def statistics(frame: pd.DataFrame, schema: dict) -> dict:
    features = []
    for spec in schema["features"]:
        cells = frame[spec["name"]]
        if spec.get("type") == "categorical":
            features.append(string_statistics(spec["name"], cells))
        else:
            features.append(numeric_statistics(spec["name"], cells))
    return {"version": 0.0, "dataset": {"item_count": float(len(frame))}, "features": features}


def constraints(stats: dict) -> dict:
    """Constraints suggested from the statistics, as Model Monitor's baselining job does."""
    item_count = stats["dataset"]["item_count"]
    features = []
    for feature in stats["features"]:
        entry = {"name": feature["name"], "inferred_type": feature["inferred_type"]}
        if "numerical_statistics" in feature:
            numeric = feature["numerical_statistics"]
            entry["completeness"] = numeric["common"]["num_present"] / item_count
            entry["num_constraints"] = {"is_non_negative": numeric["min"] >= 0}
        else:
            strings = feature["string_statistics"]
            entry["completeness"] = strings["common"]["num_present"] / item_count
            # The domain is what the model was trained on: a value the schema allows but
            # the training split lacks is one the model never learned, worth flagging.
            observed = [b["value"] for b in strings["distribution"]["categorical"]["buckets"]]
            entry["string_constraints"] = {"domains": sorted(observed)}
        entry["monitoringConfigOverrides"] = {}
        features.append(entry)
    return {"version": 0.0, "features": features, "monitoring_config": MONITORING_CONFIG}


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2))
    partial.replace(path)


def run(train_csv: Path, schema_path: Path, output_dir: Path) -> tuple[dict, dict]:
    """Baseline the training data; writes and returns (statistics, constraints)."""
    schema = load_schema(schema_path)
    stats = statistics(load_features(train_csv, schema), schema)
    suggested = constraints(stats)
    write_json(Path(output_dir) / "statistics.json", stats)
    write_json(Path(output_dir) / "constraints.json", suggested)
    return stats, suggested


def main() -> int:
    opt_ml = Path(os.environ.get("MLOPS_OPT_ML", "/opt/ml"))
    processing = opt_ml / "processing"
    try:
        stats, _ = run(processing / "input" / "train" / "train.csv",
                       processing / "input" / "schema" / "schema.json",
                       processing / "baseline")
    except BaselineError as err:
        message = opt_ml / "output" / "message"
        message.parent.mkdir(parents=True, exist_ok=True)
        message.write_text(str(err))
        print(err, file=sys.stderr)
        return 1
    names = [f["name"] for f in stats["features"]]
    print(f"baselined {int(stats['dataset']['item_count'])} rows, features {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
