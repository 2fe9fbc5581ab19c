"""The data-quality baseline step on the real training split of abalone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from model_build.scripts import baseline


@pytest.fixture(scope="module")
def baselined(tmp_path_factory, abalone_split, schema):
    out = tmp_path_factory.mktemp("baseline")
    (out / "schema.json").write_text(json.dumps(schema))
    stats, constraints = baseline.run(abalone_split / "train" / "train.csv",
                                      out / "schema.json", out / "baseline")
    train = pd.read_csv(abalone_split / "train" / "train.csv")
    return stats, constraints, train, out / "baseline"


def by_name(document: dict) -> dict:
    return {f["name"]: f for f in document["features"]}


def test_statistics_describe_the_feature_columns_only(baselined, schema):
    stats, _, train, _ = baselined
    assert stats["version"] == 0.0
    assert stats["dataset"]["item_count"] == len(train)
    assert [f["name"] for f in stats["features"]] == [f["name"] for f in schema["features"]]
    assert schema["target"] not in by_name(stats)


def test_numeric_statistics_match_the_data(baselined):
    stats, _, train, _ = baselined
    length = by_name(stats)["length"]
    assert length["inferred_type"] == "Fractional"
    numeric = length["numerical_statistics"]
    assert numeric["common"] == {"num_present": len(train), "num_missing": 0}
    assert numeric["mean"] == pytest.approx(train["length"].mean())
    assert numeric["sum"] == pytest.approx(train["length"].sum())
    assert numeric["std_dev"] == pytest.approx(train["length"].std(ddof=0))
    assert (numeric["min"], numeric["max"]) == (train["length"].min(), train["length"].max())
    kll = numeric["distribution"]["kll"]
    assert sum(b["count"] for b in kll["buckets"]) == len(train)
    assert kll["buckets"][0]["lower_bound"] == numeric["min"]
    sketch = kll["sketch"]["data"][0]
    assert len(sketch) == min(len(train), baseline.SKETCH_K)
    assert sketch == sorted(sketch)
    assert np.median(sketch) == pytest.approx(train["length"].median(), abs=0.005)


def test_string_statistics_count_each_category(baselined):
    stats, _, train, _ = baselined
    sex = by_name(stats)["sex"]
    assert sex["inferred_type"] == "String"
    buckets = {b["value"]: b["count"] for b in
               sex["string_statistics"]["distribution"]["categorical"]["buckets"]}
    assert buckets == train["sex"].value_counts().astype(float).to_dict()
    assert sex["string_statistics"]["distinct_count"] == 3


def test_constraints_carry_types_domains_completeness_and_the_robust_method(baselined):
    _, constraints, _, _ = baselined
    features = by_name(constraints)
    assert features["sex"]["string_constraints"]["domains"] == ["F", "I", "M"]
    assert all(f["completeness"] == 1.0 for f in constraints["features"])
    assert features["height"]["inferred_type"] == "Fractional"
    assert features["height"]["num_constraints"]["is_non_negative"] is True
    config = constraints["monitoring_config"]
    assert config["distribution_constraints"]["comparison_method"] == "Robust"
    assert {"evaluate_constraints", "emit_metrics", "datatype_check_threshold",
            "domain_content_threshold"} <= set(config)


def test_files_written_equal_the_returned_documents(baselined):
    stats, constraints, _, out = baselined
    assert json.loads((out / "statistics.json").read_text()) == stats
    assert json.loads((out / "constraints.json").read_text()) == constraints


def test_missing_values_lower_completeness(tmp_path, abalone, schema):
    rows = abalone.head(100).astype(str)
    rows.loc[:9, "diameter"] = ""
    rows.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    stats, constraints = baseline.run(tmp_path / "train.csv", tmp_path / "schema.json", tmp_path)
    assert by_name(stats)["diameter"]["numerical_statistics"]["common"]["num_missing"] == 10
    assert by_name(constraints)["diameter"]["completeness"] == pytest.approx(0.9)


def test_container_entry_point_writes_baseline_or_one_message(tmp_path, monkeypatch,
                                                              abalone_split, schema):
    monkeypatch.setenv("MLOPS_OPT_ML", str(tmp_path))
    inputs = tmp_path / "processing" / "input"
    (inputs / "schema").mkdir(parents=True)
    (inputs / "schema" / "schema.json").write_text(json.dumps(schema))
    (inputs / "train").mkdir()
    train = pd.read_csv(abalone_split / "train" / "train.csv")
    train.drop(columns=["height"]).to_csv(inputs / "train" / "train.csv", index=False)
    assert baseline.main() == 1
    assert "no column(s) ['height']" in (tmp_path / "output" / "message").read_text()
    train.to_csv(inputs / "train" / "train.csv", index=False)
    assert baseline.main() == 0
    assert (tmp_path / "processing" / "baseline" / "constraints.json").is_file()
