"""A small data set, set up by configuration only (scikit-learn's diabetes data: ten numeric
features, a numeric target), trained, gated and monitored with the CLI: a window of a few
hundred in-distribution rows after the gate is never called drift."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from mlops_core import config as project_config
from model_deploy.gate import post
from tests.helpers import run_mlops, variant

FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


@pytest.fixture(scope="module")
def diabetes_staging(tmp_path_factory):
    from sklearn.datasets import load_diabetes

    directory = tmp_path_factory.mktemp("diabetes")
    frame = load_diabetes(as_frame=True).frame
    assert tuple(frame.columns[:-1]) == FEATURES
    data_file = directory / "diabetes.csv"
    frame.to_csv(data_file, index=False)
    text = project_config.CONFIG_FILE.read_text()
    features = re.search(r"\[data\.features\]\n(?:.+\n)+", text).group(0)
    variant(directory, replace={
        f'file = "{project_config.load().data_file}"': f'file = "{data_file}"',
        'target = "rings"': 'target = "target"',
        features: "[data.features]\n" + "".join(f'{n} = {{ type = "numeric" }}\n'
                                                 for n in FEATURES),
        "threshold = 2.3": "threshold = 100.0",
        'name = "abalone"': 'name = "diabetes"',
    })
    state = directory / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(directory / "mlops.toml"))
        for command in (("pipeline", "run"), ("registry", "approve", "1"),
                        ("deploy", "staging"), ("endpoint", "test", "staging")):
            result = run_mlops(state, *command)
            assert result.returncode == 0, result.stdout + result.stderr
        yield state, json.loads((state / "endpoints" / "staging.json").read_text()), frame
        run_mlops(state, "endpoint", "stop", "staging")


def send(url: str, rows) -> None:
    for start in range(0, len(rows), 20):
        body = rows.iloc[start:start + 20].to_csv(header=False, index=False).encode()
        status, answer = post(url, body, "text/csv", "text/csv")
        assert status == 200, answer


def checked(state, count: int, *window: str) -> tuple[str, list[str]]:
    """The verdict of `mlops monitor run staging` on `count` rows, and its drift check rows."""
    result = run_mlops(state, "monitor", "run", "staging", *window)
    verdict = re.search(rf"{count} rows -> ([a-z ]+?)\s*$", result.stdout, re.MULTILINE)
    assert verdict, result.stdout + result.stderr
    assert "gate probes left out" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "baseline_drift_check" in line]
    assert len(lines) == len(FEATURES), result.stdout
    return verdict.group(1), [line.rstrip(" │").rsplit(" ", 1)[-1] for line in lines]


def test_20_rows_after_the_gate_are_inconclusive(diabetes_staging):
    state, endpoint, frame = diabetes_staging
    send(endpoint["url"], frame[list(FEATURES)].sample(20, random_state=8))
    assert checked(state, 20) == ("inconclusive", ["inconclusive"] * len(FEATURES))


def test_200_in_distribution_rows_after_the_gate_are_not_drift(diabetes_staging):
    state, endpoint, frame = diabetes_staging
    start = datetime.now(UTC).isoformat()
    send(endpoint["url"], frame[list(FEATURES)].sample(200, random_state=7))
    verdict, features = checked(state, 200, "--start", start)
    assert verdict in ("no drift", "inconclusive")
    assert "drift" not in features
