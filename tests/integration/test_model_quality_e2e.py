"""Model quality, whole: requests with inference ids to the local staging endpoint, ground
truth through `mlops monitor ground-truth`, then `mlops monitor run staging` merges the two
and compares with the served model's test RMSE; with `retrain_on_violation` a violation
retrains and registers a new version pointing at the report."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime

from mlops_core.names import INFERENCE_ID
from mlops_local.registry import LocalRegistry
from tests.helpers import run_mlops, variant

REQUESTS, ROWS = 12, 50  # 600 rows: training-like traffic passes the drift check


def model_test_rmse(state) -> float:
    registry = LocalRegistry(state / "registry.db")
    uri = registry.describe_model_package("abalone-models/1")["ModelMetrics"]["ModelQuality"][
        "Statistics"]["S3Uri"]
    path = state / "s3" / uri.removeprefix("s3://")
    return json.loads(path.read_text())["regression_metrics"]["rmse"]["value"]


def send(url: str, frame, prefix: str) -> dict[str, list[str]]:
    """Requests of ROWS rows, each with its own inference id; id -> predictions."""
    answers = {}
    for number in range(REQUESTS):
        rows = frame.iloc[number * ROWS:(number + 1) * ROWS]
        request = urllib.request.Request(
            f"{url}/invocations", data=rows.to_csv(header=False, index=False).encode(),
            headers={"Content-Type": "text/csv", "Accept": "text/csv",
                     INFERENCE_ID: f"{prefix}-{number}"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            answers[f"{prefix}-{number}"] = reply.read().decode().split()
    return answers


def ground_truth(state, path, answers: dict[str, list[str]], shift: float = 0.0):
    lines = ["inference_id,rings"] + [f"{request},{float(p) + shift!r}"
                                      for request, values in answers.items() for p in values]
    path.write_text("\n".join(lines) + "\n")
    result = run_mlops(state, "monitor", "ground-truth", "staging", "--file", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_invoke_prints_the_inference_id_once_per_answered_row(staging, abalone, tmp_path,
                                                               project_config):
    state, _ = staging
    rows, ids = tmp_path / "rows.csv", tmp_path / "ids.txt"
    abalone[project_config.feature_names].iloc[:3].to_csv(rows, header=False, index=False)
    result = run_mlops(state, "endpoint", "invoke", "staging", "--file", str(rows),
                       "--ids-out", str(ids))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 3
    (generated,) = set(ids.read_text().split())
    assert ids.read_text() == f"{generated}\n" * 3
    assert f"inference id: {generated}" in result.stderr


def test_ground_truth_refuses_a_bad_file_naming_the_lines(staging, tmp_path):
    state, _ = staging
    bad = tmp_path / "labels.csv"
    bad.write_text("inference_id,rings\na,9\nb,abc\nc,1,2\n,7\n")
    result = run_mlops(state, "monitor", "ground-truth", "staging", "--file", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    for expected in ("3 bad line(s), nothing written", "line 3: label 'abc' is not a number",
                     "line 4: 3 fields", "line 5"):
        assert expected in message, message
    assert not (state / "s3" / "mlops-local" / "abalone" / "ground-truth").exists()


def test_labels_equal_to_the_predictions_give_no_violation(staging, abalone, project_config,
                                                           tmp_path):
    state, endpoint = staging
    start = datetime.now(UTC).isoformat()
    answers = send(endpoint["url"], abalone[project_config.feature_names].sample(
        REQUESTS * ROWS, random_state=11), "same")
    written = ground_truth(state, tmp_path / "labels.csv", answers)
    assert f"wrote {REQUESTS} ground-truth records ({REQUESTS * ROWS} labels)" in written.stdout
    result = run_mlops(state, "monitor", "run", "staging", "--start", start)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"model quality: {REQUESTS * ROWS} rows with ground truth -> ok" in result.stdout
    report = next(line for line in result.stdout.splitlines()
                  if line.startswith("model quality report:")).split(": ", 1)[1]
    written = json.loads((state / "s3" / report.removeprefix("s3://")).read_text())
    assert written["verdict"] == "ok" and written["metrics"]["rmse"] < 1e-6


def shifted_traffic(state, endpoint, abalone, project_config, tmp_path):
    """Traffic whose labels sit three test RMSEs from the predictions; the last two requests
    get no label. Returns the window start."""
    start = datetime.now(UTC).isoformat()
    answers = send(endpoint["url"], abalone[project_config.feature_names].sample(
        REQUESTS * ROWS, random_state=12), f"shifted-{start}")
    labelled = dict(list(answers.items())[:-2])
    ground_truth(state, tmp_path / "labels.csv", labelled, shift=3 * model_test_rmse(state))
    return start


def test_labels_shifted_by_three_test_rmse_give_a_violation(staging, abalone, project_config,
                                                            tmp_path):
    state, endpoint = staging
    start = shifted_traffic(state, endpoint, abalone, project_config, tmp_path)
    result = run_mlops(state, "monitor", "run", "staging", "--start", start)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{(REQUESTS - 2) * ROWS} rows with ground truth -> violation" in result.stdout
    assert f"{REQUESTS} requests in the window: {REQUESTS - 2} with ground truth, 2 without " \
           "(not guessed)" in " ".join(result.stdout.split())
    assert "retraining" not in result.stdout  # retrain_on_violation is off by default


def test_a_violation_retrains_and_registers_a_version_pointing_at_the_report(
        staging, abalone, project_config, tmp_path):
    state, endpoint = staging
    start = shifted_traffic(state, endpoint, abalone, project_config, tmp_path)
    variant(tmp_path, replace={"retrain_on_violation = false": "retrain_on_violation = true"})
    result = run_mlops(state, "monitor", "run", "staging", "--start", start,
                       env={"MLOPS_CONFIG": str(tmp_path / "mlops.toml")})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "retraining on s3://mlops-local/abalone/data/raw/abalone.csv" in result.stdout
    report = next(line for line in result.stdout.splitlines()
                  if line.startswith("model quality report:")).split(": ", 1)[1]
    package = LocalRegistry(state / "registry.db").describe_model_package("abalone-models/2")
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert report in package["ModelPackageDescription"]
    assert package["ModelPackageDescription"].startswith("retrained after monitoring staging")
