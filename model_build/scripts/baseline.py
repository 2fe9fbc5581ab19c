"""Processing step "data-quality baseline": statistics and constraints of the feature columns.

Writes `statistics.json` and `constraints.json` in SageMaker Model Monitor's formats, so the
registered model package can name them as its drift-check baselines and the monitoring job
(`model_deploy/monitoring/drift_check.py`, or Model Monitor itself) can compare traffic with them.

Runs in the SageMaker scikit-learn container, so it imports only the standard library, numpy,
pandas and the data contract shipped with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

try:
    import contract  # shipped with the job
except ImportError:
    from model_build.scripts import contract

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
        return contract.load_schema(path)
    except contract.ContractError as err:
        raise BaselineError(str(err)) from None


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
    return pd.Series(~contract.missing_mask(cells), index=cells.index)


def _numbers(name: str, cells: pd.Series) -> np.ndarray:
    values = contract.numbers(cells)
    bad = cells[np.isnan(values)]
    if len(bad):
        raise BaselineError(
            f"numeric feature '{name}' has {len(bad)} value(s) that are not finite numbers, "
            f"e.g. {bad.iloc[0]!r}"
        )
    return values


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


def run(train_csv: Path, schema_path: Path, output_dir: Path) -> tuple[dict, dict]:
    """Baseline the training data; writes and returns (statistics, constraints)."""
    schema = load_schema(schema_path)
    stats = statistics(load_features(train_csv, schema), schema)
    suggested = constraints(stats)
    contract.write_text(Path(output_dir) / "statistics.json", json.dumps(stats, indent=2))
    contract.write_text(Path(output_dir) / "constraints.json", json.dumps(suggested, indent=2))
    return stats, suggested


def main() -> int:
    processing = contract.opt_ml() / "processing"
    try:
        stats, _ = run(processing / "input" / "train" / "train.csv",
                       processing / "input" / "schema" / contract.SCHEMA_FILE,
                       processing / "baseline")
    except BaselineError as err:
        return contract.fail(str(err))
    names = [f["name"] for f in stats["features"]]
    print(f"baselined {int(stats['dataset']['item_count'])} rows, features {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
