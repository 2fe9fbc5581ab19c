"""Capture -> monitor, whole: traffic sent over HTTP to the local staging endpoint, then
`mlops monitor run staging` checks what the endpoint captured against the baseline of the
model version that served it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops_local import monitor
from model_deploy.gate import post
from tests.helpers import run_mlops

ROWS = 600  # enough for a 0.1 distribution distance to stand out from sampling noise
BATCH = 50


def send(url: str, frame) -> None:
    for start in range(0, len(frame), BATCH):
        body = frame.iloc[start:start + BATCH].to_csv(header=False, index=False).encode()
        status, answer = post(url, body, "text/csv", "text/csv")
        assert status == 200, answer


def captured_records(state) -> int:
    return sum(len(p.read_text().splitlines()) for p in (state / "s3").rglob("*.jsonl")
               if "AllTraffic" in p.parts)


def verdicts(output: str) -> dict[str, str]:
    """feature -> verdict of its baseline_drift_check row in the printed table."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if len(cells) == 5 and cells[1] == "baseline_drift_check":
            rows[cells[0]] = cells[4]
    return rows


def test_training_like_traffic_shows_no_drift(staging, abalone, project_config):
    state, endpoint = staging
    features = project_config.feature_names
    send(endpoint["url"], abalone[features].sample(ROWS, random_state=1))
    result = run_mlops(state, "monitor", "run", "staging")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no drift" in result.stdout
    assert set(verdicts(result.stdout).values()) == {"ok"}


def test_scaled_features_drift_and_only_those(staging, abalone, project_config):
    state, endpoint = staging
    features = project_config.feature_names
    start = datetime.now(UTC).isoformat()
    shifted = abalone[features].sample(ROWS, random_state=2).copy()
    shifted[["length", "diameter"]] *= 1.5
    send(endpoint["url"], shifted)
    result = run_mlops(state, "monitor", "run", "staging", "--start", start)
    assert result.returncode == 1, result.stdout + result.stderr
    found = verdicts(result.stdout)
    assert {name for name, verdict in found.items() if verdict != "ok"} == {"length", "diameter"}
    report = next(line for line in result.stdout.splitlines() if line.startswith("report:"))
    assert report


def test_unseen_category_is_refused_and_not_captured(staging, abalone, project_config):
    """The endpoint turns unknown categories away (4xx), so they never reach the capture."""
    state, endpoint = staging
    before = captured_records(state)
    row = abalone[project_config.feature_names].iloc[:1].copy()
    row["sex"] = "X"
    status, answer = post(endpoint["url"], row.to_csv(header=False, index=False).encode(),
                          "text/csv", "text/csv")
    assert status == 400 and b"is an unknown category" in answer
    assert captured_records(state) == before


def test_the_gates_probes_are_left_out_of_the_check(staging, abalone, project_config):
    state, endpoint = staging
    start = datetime.now(UTC).isoformat()
    tested = run_mlops(state, "endpoint", "test", "staging")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    send(endpoint["url"], abalone[project_config.feature_names].sample(ROWS, random_state=6))
    result = run_mlops(state, "monitor", "run", "staging", "--start", start)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{ROWS} rows -> no drift" in result.stdout
    probes = re.search(r"\b(\d+) gate probes left out", result.stdout)
    assert probes and int(probes.group(1)) > 50, result.stdout
    assert "refused:" not in result.stdout  # the gate's bad requests are probes too


def test_a_new_category_refused_upstream_is_named_with_its_count_and_share(
        staging, abalone, project_config, tmp_path):
    """One file of 500 rows, 206 of them with a sex the schema does not list: the endpoint
    refuses it whole, `endpoint invoke` lists every refused row, and the monitor names the
    new category with its share of the traffic and fails the check."""
    state, _ = staging
    start = datetime.now(UTC).isoformat()
    rows = abalone[project_config.feature_names].sample(500, random_state=4).copy()
    rows.loc[rows.index[:206], "sex"] = "X"
    rows = rows.sample(frac=1, random_state=5)
    body = tmp_path / "drifted.csv"
    rows.to_csv(body, header=False, index=False)
    invoked = run_mlops(state, "endpoint", "invoke", "staging", "--file", str(body))
    assert invoked.returncode == 1
    refused = re.findall(r"row (\d+): unknown category 'sex': 'X'", invoked.stdout)
    expected = [str(i + 1) for i, sex in enumerate(rows["sex"]) if sex == "X"]
    assert refused == expected, invoked.stdout[:2000]
    result = run_mlops(state, "monitor", "run", "staging", "--start", start)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "-> violations" in result.stdout
    assert ("sex: 206 of 500 rows (41%) carried 'X', not a category of the schema"
            in result.stdout), result.stdout
    assert "refused: 1 requests with 500 rows" in result.stdout


def report_of(result) -> Path:
    line = next(line for line in result.stdout.splitlines() if line.startswith("report:"))
    return Path(line.split(": ", 1)[1])


def test_the_second_run_lists_the_first_in_its_report_and_in_history(
        staging, abalone, project_config, monkeypatch):
    state, endpoint = staging
    start = datetime.now(UTC).isoformat()
    rows = abalone[project_config.feature_names].sample(101, random_state=9).copy()
    rows.loc[rows.index[0], "sex"] = "X"
    assert post(endpoint["url"], rows.iloc[:1].to_csv(header=False, index=False).encode(),
                "text/csv", "text/csv")[0] == 400
    send(endpoint["url"], rows.iloc[1:])
    first, second = (report_of(run_mlops(state, "monitor", "run", "staging", "--start", start))
                     for _ in range(2))

    html = second.read_text()
    earlier = html.split("<h2>Earlier reports</h2>")[1]
    assert f'<a href="../{first.parent.name}/report.html">report</a>' in earlier
    sex = html.split('<section id="feature-sex">')[1].split("</section>")[0]
    assert "1 row refused: unknown category &#x27;X&#x27;" in sex
    monkeypatch.setenv("MLOPS_HOME", str(state))
    runs = monitor.history("staging")
    reports = [run["report_path"] for run in runs if run["kind"] == "data quality"]
    assert reports[:2] == [second, first]
    earliest = next(run for run in runs if run["report_path"] == first)
    assert earliest["summary"]["rows_checked"] == 100
    assert earliest["summary"]["refused_share"] == pytest.approx(1 / 101)
    assert any(run["kind"] == "model quality" for run in runs)
    listed = run_mlops(state, "monitor", "history", "staging")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.endswith(str(first)))
    assert "data quality" in line and "100 rows checked, 1.0% refused" in line


def test_empty_window_is_an_error_not_a_verdict(staging):
    state, _ = staging
    result = run_mlops(state, "monitor", "run", "staging", "--start", "2001-01-01T00:00:00Z",
                       "--end", "2001-01-02T00:00:00Z")
    assert result.returncode == 2
    assert "no drift" not in result.stdout + result.stderr
    assert "no " in result.stderr and "record" in result.stderr


def test_captured_traffic_is_still_checked_after_the_endpoint_stops(staging):
    state, _ = staging
    assert run_mlops(state, "endpoint", "stop", "staging").returncode == 0
    result = run_mlops(state, "monitor", "run", "staging")
    assert "model version 1" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1  # the scaled traffic sent above is still in the capture


@pytest.fixture(scope="module")
def new_category_staging(tmp_path_factory):
    """A model whose schema allows sex 'X', which the training data never has: the endpoint
    accepts it, and the baseline (what the model was trained on) does not contain it."""
    from tests.helpers import variant

    directory = tmp_path_factory.mktemp("new-category")
    variant(directory, replace={'values = ["M", "F", "I"]': 'values = ["M", "F", "I", "X"]'})
    state = directory / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(directory / "mlops.toml"))
        for command in (("pipeline", "run"), ("registry", "approve", "1"),
                        ("deploy", "staging")):
            result = run_mlops(state, *command)
            assert result.returncode == 0, result.stdout + result.stderr
        yield state, json.loads((state / "endpoints" / "staging.json").read_text())
        run_mlops(state, "endpoint", "stop", "staging")


def test_unseen_category_gives_a_categorical_values_violation_on_sex(
        new_category_staging, abalone, project_config):
    state, endpoint = new_category_staging
    traffic = abalone[project_config.feature_names].sample(ROWS, random_state=3).copy()
    traffic.loc[traffic.index[:120], "sex"] = "X"  # 20%, over the 10% the baseline tolerates
    send(endpoint["url"], traffic)
    result = run_mlops(state, "monitor", "run", "staging")
    assert result.returncode == 1, result.stdout + result.stderr
    violations = {(cells[0], cells[1]) for line in result.stdout.splitlines()
                  if len(cells := [c.strip() for c in line.split("│") if c.strip()]) >= 3
                  and cells[-1] in ("violation", "drift")}
    assert ("sex", "categorical_values_check") in violations
    assert all(feature == "sex" for feature, _ in violations), violations
