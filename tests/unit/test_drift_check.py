"""The drift check on capture files written in the contract's format, and its local runner."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import boto3
import moto
import pandas as pd
import pytest

from mlops_local import monitor
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore
from model_build.scripts import baseline
from model_deploy.monitoring import drift_check, model_quality
from model_deploy.monitoring.drift_check import DirectorySource, DriftCheckError, Window

HOUR = datetime(2026, 11, 23, 15, tzinfo=UTC)
NUMERIC = ["length", "diameter", "height", "whole_weight", "shucked_weight", "viscera_weight",
           "shell_weight"]


@pytest.fixture(scope="module")
def baseline_files(tmp_path_factory, abalone_split, schema):
    out = tmp_path_factory.mktemp("baseline")
    (out / "schema.json").write_text(json.dumps(schema))
    baseline.run(abalone_split / "train" / "train.csv", out / "schema.json", out)
    return out / "statistics.json", out / "constraints.json"


@pytest.fixture(scope="module")
def traffic(abalone, schema):
    """2,000 requests drawn from the abalone rows, as the endpoint receives them."""
    names = [f["name"] for f in schema["features"]]
    return abalone[names].sample(2000, replace=True, random_state=7).reset_index(drop=True)


def capture_line(body: str, when: datetime, content_type: str = "text/csv") -> str:
    encoding = "JSON" if "json" in content_type else "CSV"
    return json.dumps({
        "captureData": {
            "endpointInput": {"observedContentType": content_type, "mode": "INPUT",
                              "data": body, "encoding": encoding},
            "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT",
                               "data": "9.5", "encoding": "CSV"},
        },
        "eventMetadata": {"eventId": str(uuid.uuid4()),
                          "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.000Z")},
        "eventVersion": "0",
    })


def write_capture(version_root, lines: list[str], when: datetime = HOUR, name="part") -> None:
    folder = version_root / "abalone-staging" / "AllTraffic" / when.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def csv_lines(frame: pd.DataFrame, when: datetime = HOUR) -> list[str]:
    return [capture_line(",".join(map(str, row)), when) for row in frame.itertuples(index=False)]


def check(root, baseline_files, **kwargs) -> drift_check.DriftResult:
    statistics, constraints = baseline_files
    return drift_check.run(DirectorySource(root), statistics, constraints,
                           kwargs.pop("output_dir", None), **kwargs)


def flagged(result) -> set[tuple[str, str]]:
    return {(v["feature_name"], v["constraint_check_type"]) for v in result.violations}


def test_traffic_like_the_training_data_has_no_violation(tmp_path, baseline_files, traffic):
    write_capture(tmp_path / "v1", csv_lines(traffic))
    result = check(tmp_path / "v1", baseline_files, output_dir=tmp_path / "out",
                   model_version=1)
    assert result.violations == []
    assert result.verdict == "no drift"
    assert result.counts["rows_checked"] == len(traffic)
    assert all(f.distance < f.threshold for f in result.features)
    assert json.loads((tmp_path / "out" / "constraint_violations.json").read_text()) == {
        "violations": []}


def test_scaled_numeric_features_drift_and_only_those(tmp_path, baseline_files, traffic):
    scaled = traffic.copy()
    scaled[["length", "whole_weight"]] *= 1.5
    write_capture(tmp_path / "v1", csv_lines(scaled))
    result = check(tmp_path / "v1", baseline_files, output_dir=tmp_path / "out")
    assert flagged(result) == {("length", "baseline_drift_check"),
                               ("whole_weight", "baseline_drift_check")}
    assert result.verdict == "drift"
    written = json.loads((tmp_path / "out" / "constraint_violations.json").read_text())
    drift = next(v for v in written["violations"] if v["feature_name"] == "length")
    metrics = {f["name"]: f for f in
               json.loads((tmp_path / "out" / "drift_metrics.json").read_text())["features"]}
    assert drift["description"] == (f"Baseline drift distance: {metrics['length']['distance']}"
                                    f" exceeds threshold: {metrics['length']['threshold']}")
    assert metrics["length"]["distance"] > 0.3 > metrics["diameter"]["distance"]


def test_unseen_category_is_a_categorical_values_violation(tmp_path, baseline_files, traffic):
    changed = traffic.copy()
    changed.loc[: len(changed) // 4, "sex"] = "U"
    write_capture(tmp_path / "v1", csv_lines(changed))
    result = check(tmp_path / "v1", baseline_files)
    assert ("sex", "categorical_values_check") in flagged(result)
    assert {feature for feature, _ in flagged(result)} == {"sex"}
    description = next(v["description"] for v in result.violations
                       if v["constraint_check_type"] == "categorical_values_check")
    assert "'U'" in description


def test_too_few_records_are_inconclusive_not_no_drift(tmp_path, baseline_files, traffic):
    write_capture(tmp_path / "v1", csv_lines(traffic.iloc[:40]))
    result = check(tmp_path / "v1", baseline_files)
    assert result.verdict == "inconclusive"
    assert all(f.threshold > f.comparison_threshold for f in result.features)
    assert {f.verdict for f in result.features} <= {"inconclusive", "drift"}


def probe(line: str) -> str:
    record = json.loads(line)
    record["eventMetadata"]["inferenceId"] = f"mlops-gate-{uuid.uuid4()}"
    return json.dumps(record)


def write_refusals(version_root, records: list[dict], when: datetime = HOUR) -> None:
    folder = version_root / "abalone-staging" / "refused" / when.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def refusal(rows: int, problems: list[tuple], inference_id=None, when: datetime = HOUR) -> dict:
    return {"time": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "inferenceId": inference_id,
            "rows": rows, "problems": [{"reason": r, "feature": f, "value": v, "rows": n}
                                       for r, f, v, n in problems]}


def test_gate_probes_are_left_out_and_counted(tmp_path, baseline_files, traffic):
    lines = csv_lines(traffic.iloc[:1000])
    write_capture(tmp_path / "v1", lines + [probe(line) for line in csv_lines(traffic.iloc[:5])])
    write_refusals(tmp_path / "v1", [refusal(1, [("not a number", "length", "abc", 1)],
                                             "mlops-gate-1")])
    result = check(tmp_path / "v1", baseline_files)
    assert (result.counts["rows_checked"], result.counts["probes"]) == (1000, 6)
    assert result.counts["refused_requests"] == 0
    with_probes = check(tmp_path / "v1", baseline_files, include_probes=True)
    assert (with_probes.counts["rows_checked"], with_probes.counts["probes"]) == (1005, 0)
    assert with_probes.counts["refused_rows"] == 1


def test_refused_traffic_is_named_with_its_share_and_fails_above_the_limit(
        tmp_path, baseline_files, traffic):
    write_capture(tmp_path / "v1", csv_lines(traffic.iloc[:450]))
    write_refusals(tmp_path / "v1", [
        refusal(40, [("unknown category", "sex", "X", 30), ("wrong column count", None, 7, 2)]),
        refusal(10, [("unknown category", "sex", "X", 4)])])
    result = check(tmp_path / "v1", baseline_files, max_refused_share=0.05,
                   output_dir=tmp_path / "out")
    assert result.refusals == [
        "sex: 34 of 500 rows (7%) carried 'X', not a category of the schema",
        "2 of 500 rows (0%): wrong column count (7 columns)"]
    assert ("sex", "refused_requests_check") in flagged(result)
    assert result.verdict == "violations"
    assert "50 of 500 rows (10.0%) came in 2 refused requests" in result.violations[-1][
        "description"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "carried &#x27;X&#x27;" in html
    sex = html.split('<section id="feature-sex">')[1].split("</section>")[0]
    assert "<title>X: 34 rows refused</title>" in sex
    assert "34 rows refused: unknown category &#x27;X&#x27;" in sex
    lenient = check(tmp_path / "v1", baseline_files, max_refused_share=0.2)
    assert lenient.verdict != "violations" and lenient.refusals == result.refusals


def test_traffic_that_was_all_refused_is_a_verdict_not_an_error(tmp_path, baseline_files):
    write_refusals(tmp_path / "v1", [refusal(500, [("unknown category", "sex", "X", 206)])])
    result = check(tmp_path / "v1", baseline_files)
    assert (result.verdict, result.features) == ("violations", [])
    assert result.refusals == [
        "sex: 206 of 500 rows (41%) carried 'X', not a category of the schema"]


def test_json_instances_are_read_like_csv_rows(tmp_path, baseline_files, traffic):
    half = len(traffic) // 2
    lines = csv_lines(traffic.iloc[:half])
    for start in range(half, len(traffic), 10):  # ten rows per JSON request
        body = {"instances": traffic.iloc[start:start + 10].to_numpy().tolist()}
        lines.append(capture_line(json.dumps(body), HOUR, "application/json"))
    write_capture(tmp_path / "v1", lines)
    result = check(tmp_path / "v1", baseline_files)
    assert result.counts["rows_checked"] == len(traffic)
    assert result.verdict == "no drift"


def test_window_selects_by_inference_time_and_hour_folder(tmp_path, baseline_files, traffic):
    later = HOUR.replace(hour=16)
    write_capture(tmp_path / "v1", csv_lines(traffic.iloc[:300]), HOUR)
    write_capture(tmp_path / "v1", csv_lines(traffic.iloc[300:500], later), later)
    result = check(tmp_path / "v1", baseline_files, window=Window(start=later))
    assert result.counts["rows_checked"] == 200
    assert result.counts["files"] == 1


def test_empty_window_fails_with_what_was_captured(tmp_path, baseline_files, traffic):
    write_capture(tmp_path / "v1", csv_lines(traffic.iloc[:50]))
    window = Window(HOUR.replace(minute=30), HOUR.replace(hour=16))
    with pytest.raises(DriftCheckError, match=r"no captured records from .* 50 records fall "
                                              r"outside it"):
        check(tmp_path / "v1", baseline_files, window=window)


def test_capture_of_another_model_version_is_refused(tmp_path, baseline_files, traffic):
    write_capture(tmp_path / "v1", csv_lines(traffic.iloc[:50]))
    with pytest.raises(DriftCheckError, match=r"capture exists only for other model versions: "
                                              r"v1 \(1 files\)"):
        check(tmp_path / "v2", baseline_files, model_version=2)
    with pytest.raises(DriftCheckError, match="holds traffic of model version 1, but the "
                                              "baseline is of model version 2"):
        check(tmp_path / "v1", baseline_files, model_version=2)


def test_truncated_lines_are_counted_and_all_bad_fails(tmp_path, baseline_files, traffic):
    lines = csv_lines(traffic.iloc[:400])
    lines[10] = lines[10][: len(lines[10]) // 2]
    lines[20] = "not json"
    write_capture(tmp_path / "v1", lines)
    result = check(tmp_path / "v1", baseline_files)
    assert result.counts["invalid_lines"] == 2
    assert result.counts["rows_checked"] == 398
    write_capture(tmp_path / "v3", [line[:40] for line in lines])
    with pytest.raises(DriftCheckError, match="all 400 capture lines .* are invalid JSON"):
        check(tmp_path / "v3", baseline_files)


def test_rows_with_wrong_column_count(tmp_path, baseline_files, traffic):
    lines = csv_lines(traffic.iloc[:400])
    lines += [capture_line("M,0.5,0.4", HOUR)] * 5 + [capture_line("M," + "0.1," * 8, HOUR)]
    write_capture(tmp_path / "v1", lines)
    result = check(tmp_path / "v1", baseline_files)
    assert result.counts["rows_checked"] == 400
    kinds = {v["constraint_check_type"]: v for v in result.violations}
    assert set(kinds) == {"missing_column_check", "extra_column_check"}
    assert "Number of columns in current dataset: 3" in kinds["missing_column_check"]["description"]
    write_capture(tmp_path / "v2", [capture_line("M,0.5", HOUR)] * 3)
    with pytest.raises(DriftCheckError, match="no captured row has the baseline's 8 columns"):
        check(tmp_path / "v2", baseline_files)


def test_missing_values_and_text_in_numeric_columns(tmp_path, baseline_files, traffic):
    changed = traffic.astype(str)
    changed.loc[:399, "height"] = ""
    changed.loc[:599, "diameter"] = "n/a-ish"
    write_capture(tmp_path / "v1", csv_lines(changed))
    result = check(tmp_path / "v1", baseline_files)
    assert {("height", "completeness_check"), ("diameter", "data_type_check")} <= flagged(result)


def test_report_and_metric_sink(tmp_path, baseline_files, traffic):
    scaled = traffic.copy()
    scaled["height"] *= 1.5
    write_capture(tmp_path / "v1", csv_lines(scaled))
    emitted = []
    result = check(tmp_path / "v1", baseline_files, output_dir=tmp_path / "out",
                   metrics_sink=emitted.extend)
    html = result.report_path.read_text()
    assert html.count("<svg") == 8
    assert "Baseline drift distance" in html
    drift = {d["MetricName"]: d["Value"] for d in emitted}
    height = next(f for f in result.features if f.name == "height")
    assert drift["feature_baseline_drift_height"] == height.distance
    assert drift["constraint_violations"] == 1


def test_processing_job_entry_point(tmp_path, monkeypatch, baseline_files, traffic):
    monkeypatch.setenv("MLOPS_OPT_ML", str(tmp_path / "opt_ml"))
    (tmp_path / "opt_ml" / "output").mkdir(parents=True)
    write_capture(tmp_path / "v1", csv_lines(traffic.iloc[:300]))
    statistics, constraints = baseline_files
    argv = ["--capture-dir", str(tmp_path / "v1"), "--baseline-statistics", str(statistics),
            "--baseline-constraints", str(constraints), "--output", str(tmp_path / "out"),
            "--start", "2026-11-23T15:00:00Z", "--feature-names", ",".join(traffic.columns)]
    assert drift_check.main(argv) == 0
    metrics = json.loads((tmp_path / "out" / "drift_metrics.json").read_text())
    assert [f["name"] for f in metrics["features"]] == list(traffic.columns)
    assert metrics["records"]["rows_checked"] == 300
    assert drift_check.main([*argv[:-1], "sex,rings"]) == 1
    message = (tmp_path / "opt_ml" / "output" / "message").read_text()
    assert message.startswith("features ['rings'] are not in the baseline")


# ---------------------------------------------------------------------------- local runner


@pytest.fixture
def deployed(tmp_path, monkeypatch, baseline_files, project_config):
    """A local state with a registered version 2 and a staging endpoint record serving it."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    store, registry = LocalStore(), LocalRegistry()
    bucket, project = project_config.local["bucket"], project_config.project
    uris = {}
    for path in baseline_files:
        uris[path.stem] = store.put_file(path, f"s3://{bucket}/{project}/baseline/{path.name}")
    baselines = {"ModelDataQuality": {
        "Statistics": {"ContentType": "application/json", "S3Uri": uris["statistics"]},
        "Constraints": {"ContentType": "application/json", "S3Uri": uris["constraints"]}}}
    for _ in range(2):
        arn = registry.create_model_package(ModelPackageGroupName="abalone-models",
                                            DriftCheckBaselines=baselines)["ModelPackageArn"]
    capture_uri = f"s3://{bucket}/{project}/datacapture/staging/v2"
    (tmp_path / "endpoints").mkdir()
    (tmp_path / "endpoints" / "staging.json").write_text(json.dumps({
        "stage": "staging", "capture_uri": capture_uri,
        "model_info": {"ModelPackageArn": arn, "ModelPackageVersion": 2}}))
    return store, capture_uri


def test_run_local_checks_the_served_version(deployed, traffic, project_config):
    store, capture_uri = deployed
    scaled = traffic.copy()
    scaled["shell_weight"] *= 1.5
    write_capture(store.path(capture_uri), csv_lines(scaled))
    result = monitor.run_local("staging")
    assert result.model_version == 2
    assert result.verdict == "drift"
    drifting = {r.feature for r in result.rows if r.verdict == "drift"}
    assert drifting == {"shell_weight"}
    assert result.output_uri.startswith(
        f"s3://{project_config.local['bucket']}/abalone/monitoring/staging/")
    assert store.exists(result.output_uri + "/constraint_violations.json")
    assert result.report_path.is_file()
    record = json.loads(store.path(result.metrics_uri).read_text())
    assert {d["MetricName"] for d in record["MetricData"]} >= {
        "feature_baseline_drift_shell_weight"}
    table = monitor.format_table(result)
    assert "shell_weight" in table and "drift" in table and str(result.report_path) in table


def quality_run(capture_dir, lines: list[str], truth_dir, output_dir) -> None:
    """A model-quality run on the capture `lines` under capture_dir (each predicted 9.5),
    labels 9 and 10 in turn written under truth_dir, its outputs in output_dir."""
    truth = [json.dumps({"groundTruthData": {"data": str(9 + i % 2), "encoding": "CSV"},
                         "eventMetadata": {"eventId": json.loads(line)["eventMetadata"][
                             "eventId"]}, "eventVersion": "0"}) for i, line in enumerate(lines)]
    folder = truth_dir / "2026/11/23/16"
    folder.mkdir(parents=True)
    (folder / "part.jsonl").write_text("\n".join(truth) + "\n")
    model_quality.run(DirectorySource(capture_dir), DirectorySource(truth_dir),
                      {"rmse": 2.0, "mae": 1.5, "r2": 0.5}, output_dir)


def test_history_lists_earlier_runs_newest_first_from_what_they_wrote(deployed, traffic,
                                                                      project_config):
    store, capture_uri = deployed
    lines = csv_lines(traffic.iloc[:300])
    write_capture(store.path(capture_uri), lines)
    assert monitor.history("staging") == []
    first = monitor.run_local("staging")
    prefix = monitor.monitoring_uri(project_config, "staging")
    quality_run(store.path(capture_uri), lines, store.path(prefix) / "ground-truth",
                store.path(f"{prefix}/model-quality/20261123T160000000000Z"))
    write_refusals(store.path(capture_uri), [refusal(100, [("unknown category", "sex", "X", 3)])])
    second = monitor.run_local("staging")
    broken = store.path(prefix) / "20261123T170000000000Z"
    broken.mkdir()
    (broken / "drift_metrics.json").write_text('{"verdict": ')  # a run cut off while writing

    runs = monitor.history("staging")

    assert [run["kind"] for run in runs] == ["data quality", "model quality", "data quality"]
    assert [run["uri"] for run in runs[::2]] == [second.output_uri + "/report.html",
                                                  first.output_uri + "/report.html"]
    assert runs[2]["report_path"] == first.report_path
    assert runs[2]["relative_path"] == first.output_uri.rsplit("/", 1)[1] + "/report.html"
    assert runs[2]["verdict"] == first.verdict
    assert runs[2]["summary"] == {"rows_checked": 300, "refused_rows": 0, "refused_share": 0.0}
    assert runs[0]["summary"]["refused_share"] == 100 / 400
    quality = runs[1]
    assert quality["verdict"] == "ok"
    assert quality["report_path"].name == "model_quality.json"
    assert quality["uri"].startswith(prefix + "/model-quality/")
    assert quality["summary"]["rmse"] == pytest.approx(0.5)
    assert quality["summary"]["rmse_threshold"] == pytest.approx(2.4)
    assert all(datetime.fromisoformat(run["time"]).tzinfo for run in runs)
    written = json.loads((first.report_path.parent / "drift_metrics.json").read_text())
    assert written["time"] == runs[2]["time"]
    del written["time"]  # as runs written before the summary carried it: the folder's stamp
    (first.report_path.parent / "drift_metrics.json").write_text(json.dumps(written))
    stamp = datetime.strptime(first.output_uri.rsplit("/", 1)[1], "%Y%m%dT%H%M%S%fZ")
    assert monitor.history("staging")[2]["time"] == stamp.replace(tzinfo=UTC).isoformat()
    html = second.report_path.read_text()
    assert f'<a href="../{runs[2]["relative_path"]}">report</a>' in html
    assert f'<a href="../{quality["relative_path"]}">' in html
    printed = monitor.format_history("staging", runs).splitlines()
    assert printed[1].endswith(str(second.report_path)) and "25.0% refused" in printed[1]
    assert "rmse 0.5000 (bound 2.4000), mae 0.5000, r2 0.0000" in printed[2]
    assert "no monitoring run of stage prod yet" in monitor.format_history("prod", [])


def test_run_local_explains_missing_endpoint_and_other_version(deployed, traffic):
    store, capture_uri = deployed
    with pytest.raises(monitor.MonitorError, match="no endpoint deployed for stage prod"):
        monitor.run_local("prod")
    write_capture(store.path(capture_uri.replace("/v2", "/v1")), csv_lines(traffic.iloc[:20]))
    with pytest.raises(monitor.MonitorError, match="only for other model versions: v1"):
        monitor.run_local("staging")


def test_cloud_job_reads_s3_capture_and_puts_cloudwatch_metrics(monkeypatch, baseline_files,
                                                                 traffic):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        s3, cloudwatch = boto3.client("s3"), boto3.client("cloudwatch")
        s3.create_bucket(Bucket="capture")
        key = "abalone/datacapture/prod/v3/abalone-prod/AllTraffic/2026/11/23/15/part.jsonl"
        s3.put_object(Bucket="capture", Key=key,
                      Body="\n".join(csv_lines(traffic.iloc[:500])).encode())
        statistics, constraints = baseline_files
        sink = drift_check.cloudwatch_sink(cloudwatch, "mlops/abalone",
                                           [{"Name": "Endpoint", "Value": "abalone-prod"}])
        source = drift_check.S3Source(s3, "s3://capture/abalone/datacapture/prod/v3")
        result = drift_check.run(source, statistics, constraints, None, model_version=3,
                                 metrics_sink=sink)
        assert result.counts["rows_checked"] == 500
        names = {m["MetricName"] for m in
                 cloudwatch.list_metrics(Namespace="mlops/abalone")["Metrics"]}
        assert "feature_baseline_drift_height" in names
        with pytest.raises(DriftCheckError, match=r"other model versions: v3 \(1 files\)"):
            drift_check.run(drift_check.S3Source(s3, "s3://capture/abalone/datacapture/prod/v4"),
                            statistics, constraints, None)


def test_cloud_job_reports_the_earlier_runs_under_its_history_uri(monkeypatch, tmp_path,
                                                                  baseline_files, traffic):
    """The pipeline's runs, each under its execution id as the template lays them out: the
    report lists them newest first (not in the ids' order) and leaves out a half-written one."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    lines = csv_lines(traffic.iloc[:300])
    write_capture(tmp_path / "v3", lines)
    statistics, constraints = baseline_files
    earlier = {"zz1older": "2026-11-23T16:00:00+00:00", "aa2newer": "2026-11-24T16:00:00+00:00"}
    for run_id, time in earlier.items():
        check(tmp_path / "v3", baseline_files, output_dir=tmp_path / run_id)
        written = json.loads((tmp_path / run_id / "drift_metrics.json").read_text())
        (tmp_path / run_id / "drift_metrics.json").write_text(json.dumps({**written,
                                                                          "time": time}))
    quality_run(tmp_path / "v3", lines, tmp_path / "truth", tmp_path / "model-quality" / "mq1")
    prefix = "abalone/monitoring/prod/v3"
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="artifacts")
        for run in (*earlier, "model-quality/mq1"):
            for path in (tmp_path / run).iterdir():
                s3.upload_file(str(path), "artifacts", f"{prefix}/{run}/{path.name}")
        s3.put_object(Bucket="artifacts", Key=f"{prefix}/cut0off/drift_metrics.json",
                      Body=b'{"verdict": ')
        key = "abalone/datacapture/prod/v3/abalone-prod/AllTraffic/2026/11/23/15/part.jsonl"
        s3.put_object(Bucket="artifacts", Key=key, Body="\n".join(lines).encode())

        assert drift_check.main([
            "--capture-uri", "s3://artifacts/abalone/datacapture/prod/v3", "--model-version", "3",
            "--baseline-statistics", str(statistics), "--baseline-constraints", str(constraints),
            "--output", str(tmp_path / "out"), "--history-uri", f"s3://artifacts/{prefix}",
            "--region", "us-east-1"]) == 0

    html = (tmp_path / "out" / "report.html").read_text()
    earlier_reports = html[html.index("<h2>Earlier reports</h2>"):]
    links = [earlier_reports.index(f'<a href="../{run_id}/report.html">report</a>')
             for run_id in ("aa2newer", "zz1older")]
    assert links == sorted(links)  # newest first
    assert "cut0off" not in html and "given no history" not in html
    assert '<a href="../model-quality/mq1/model_quality.json">' in html


@pytest.mark.parametrize("value", ["1.5", "-0.1", "true", '"5%"'])
def test_max_refused_share_must_be_a_share(tmp_path, value):
    from mlops_core.config import ConfigError
    from tests.helpers import variant

    assert variant(tmp_path).monitoring.max_refused_share == 0.05
    with pytest.raises(ConfigError, match=r"\[monitoring\] max_refused_share"):
        variant(tmp_path, replace={"max_refused_share = 0.05": f"max_refused_share = {value}"})


def test_a_line_of_two_json_values_is_one_invalid_line(tmp_path, baseline_files, traffic):
    write_capture(tmp_path / "v1", csv_lines(traffic.iloc[:300]) + ['1, 2', '{"a": 1}'])
    result = check(tmp_path / "v1", baseline_files)
    assert (result.counts["invalid_lines"], result.counts["rows_checked"]) == (2, 300)


def read_lines(tmp_path, name: str, lines: list[str]) -> drift_check.Capture:
    write_capture(tmp_path / name, lines)
    source = DirectorySource(tmp_path / name)
    return drift_check.read_capture(source, source.keys(), Window())


def test_plain_csv_records_read_as_their_json_says(tmp_path, traffic):
    """Lines the reader takes apart without decoding JSON (json.dumps' layout or compact) give
    what decoding the same records gives; so do files that mix in lines it must decode."""
    lines = csv_lines(traffic.head(50))
    lines[3] = probe(lines[3])
    lines[7] = capture_line('"M",0.5,"0,4"', HOUR)  # quoted cells: an escaped body
    records = [json.loads(line) for line in lines]
    compact = [json.dumps(r, separators=(",", ":")) for r in records]
    assert all(drift_check._CSV_RECORD.fullmatch(line) for line in lines[:3] + compact[:3])
    decoded = [json.dumps(r, sort_keys=True) for r in records]  # a layout it must decode
    assert not any(drift_check._CSV_RECORD.fullmatch(line) for line in decoded)
    reads = [read_lines(tmp_path, name, variant) for name, variant in (
        ("plain", lines), ("compact", compact), ("decoded", decoded),
        ("mixed", [*lines[:20], "", "{not json", *decoded[20:]]))]
    for capture in reads:
        assert capture.rows == reads[2].rows
        assert capture.rows[7 - 1] == ["M", "0.5", "0,4"]  # the probe (line 3) is left out
        assert (capture.probes, capture.first_time, capture.last_time) == (
            1, reads[2].first_time, reads[2].last_time)
    assert [(c.lines, c.invalid_lines) for c in reads] == [(50, 0)] * 3 + [(51, 1)]
