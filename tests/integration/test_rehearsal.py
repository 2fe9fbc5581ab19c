"""The rehearsal of what CodeBuild runs: the aws profile's definition (Tune step, its trial
budget) run by the local engine with this machine's names, and the diffs that show nothing
but those names separates it from the definition the aws target builds.

`test_the_rehearsal_runs_codebuilds_definition` is the once-per-run rehearsal of `make test`:
the project's own mlops.toml, all its trials.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mlops_core import config as project_config
from mlops_core import targets
from mlops_core.config import ROOT
from mlops_local.store import LocalStore
from model_build import definition, rehearsal
from model_deploy import build
from tests.helpers import run_mlops, variant

BUCKET = "abalone-data-rehearsal"
ROLE = "arn:aws:iam::123456789012:role/abalone-sagemaker"
REGION = "eu-west-1"  # not the local one, so the region and the image registry are swapped too
PACKAGES = ("mlops", "mlops_core", "mlops_local", "model_build", "model_deploy")
METRIC_LINE = 'print(f"validation_{name}={metrics[name]:.6f}")'


def _record(state: Path) -> dict:
    """The one execution's record: {"execution": ..., "steps": {name: step}}."""
    (record,) = [json.loads(p.read_text()) for p in (state / "executions").glob("*.json")]
    return record


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory):
    state = tmp_path_factory.mktemp("rehearsal")
    return state, run_mlops(state, "pipeline", "run", "--profile", "aws")


def test_the_rehearsal_runs_codebuilds_definition(rehearsed):
    state, result = rehearsed
    assert result.returncode == 0, result.stdout + result.stderr
    config = project_config.load()
    out = result.stdout
    assert "rehearsing the aws profile's definition on this machine" in out
    for name in ("bucket", "role", "region", "image registry"):
        assert f"\n  {name}: " in out
    assert f"-> {config.local['bucket']} " in out
    record = _record(state)
    assert record["execution"]["PipelineExecutionStatus"] == "Succeeded"
    tune = record["steps"]["Tune"]
    job = tune["Properties"]["HyperParameterTuningJobConfig"]
    assert job["Strategy"] == config.tuning.strategy
    assert job["ResourceLimits"] == {"MaxNumberOfTrainingJobs": config.tuning.max_jobs,
                                     "MaxParallelTrainingJobs": config.tuning.max_parallel_jobs}
    assert tune["Properties"]["ObjectiveStatusCounters"]["Succeeded"] == config.tuning.max_jobs
    assert record["steps"]["RegisterModel"]["StepStatus"] == "Succeeded"
    assert "Train" not in record["steps"]


def test_the_diffs_show_what_separates_the_profiles_and_that_a_rehearsal_is_names(rehearsed):
    state, _ = rehearsed
    result = run_mlops(state, "pipeline", "diff")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Steps[Train] only in local: the local profile trains once ([tuning] local = false)" \
        in out
    assert "Steps[Tune] only in aws: the aws profile tunes ([tuning] aws = true" in out
    assert "NOT explained" not in out
    for args in (("pipeline", "diff", "--profile", "aws"), ("batch", "diff")):
        result = run_mlops(state, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "members differ only in these names" in result.stdout
        assert result.stdout.rstrip().endswith("nothing else differs"), result.stdout


def _copy_project(root: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_broken_metric_line_fails_the_rehearsal_and_not_the_local_run(tmp_path, monkeypatch):
    """train.py stops printing what the metric regex looks for: `make pipeline` (a Train step
    collects metrics but needs none) passes, the rehearsal fails naming the metric and the
    regex, as the Tune step in the account would. Two trials are enough to show it."""
    tree = _copy_project(tmp_path / "project")
    train = tree / "model_build" / "scripts" / "train.py"
    assert METRIC_LINE in train.read_text()
    train.write_text(train.read_text().replace(
        METRIC_LINE, 'print(f"validation {name}: {metrics[name]:.6f}")'))
    variant(tree, replace={"max_jobs = 20": "max_jobs = 2"})
    env = {"PYTHONPATH": str(tree), "MLOPS_CONFIG": str(tree / "mlops.toml")}
    monkeypatch.chdir(tree)  # `python -m` puts the working directory first on the path

    local = run_mlops(tmp_path / "local", "pipeline", "run", env=env)
    assert local.returncode == 0, local.stdout + local.stderr

    state = tmp_path / "rehearsal"
    result = run_mlops(state, "pipeline", "run", "--profile", "aws", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    reason = _record(state)["steps"]["Tune"]["FailureReason"]
    assert reason.startswith("no trial logged the objective metric validation:rmse "
                             "(regex 'validation_rmse=([0-9.eE+-]+)'); see ")
    log = Path(reason.rsplit("see ", 1)[1])
    assert log.is_file() and "validation rmse: " in log.read_text()
    assert "no trial logged the objective metric validation:rmse" in " ".join(
        result.stdout.split())


def _s3_files(s3):
    """An upload's objects under a URI in (moto's) S3, by name relative to it."""
    def files(uri: str) -> dict[str, bytes]:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
                .get("Contents", [])]
        return {key[len(prefix):].lstrip("/") or key.rsplit("/", 1)[-1]:
                s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}

    return files


@pytest.fixture(scope="module")
def against_moto(tmp_path_factory):
    """The rehearsal's definitions and those built for the aws target with the stack's names
    (CodeBuild's MLOPS_BUCKET, MLOPS_ROLE_ARN, its region), uploading to moto's S3."""
    patch = pytest.MonkeyPatch()
    for name, value in {"MLOPS_BUCKET": BUCKET, "MLOPS_ROLE_ARN": ROLE, "AWS_REGION": REGION,
                        "AWS_DEFAULT_REGION": REGION,
                        "MLOPS_HOME": str(tmp_path_factory.mktemp("state"))}.items():
        patch.setenv(name, value)
    try:
        with mock_aws():
            s3 = boto3.client("s3", region_name=REGION)
            s3.create_bucket(Bucket=BUCKET,
                             CreateBucketConfiguration={"LocationConstraint": REGION})
            config = project_config.load()
            store = LocalStore()
            local = (targets.local(config, store, "aws"), rehearsal.stored(store))
            aws = (targets.aws(config, s3), _s3_files(s3))
            yield {kind.name: rehearsal.compare(config, local, aws, kind)
                   for kind in (definition.TRAINING, build.BATCH)}
    finally:
        patch.undo()


@pytest.mark.parametrize("kind", ["training", "batch"])
def test_a_rehearsal_differs_from_the_aws_definition_only_in_names(against_moto, kind):
    comparison = against_moto[kind]
    assert comparison.of(rehearsal.PROFILES, rehearsal.UNEXPLAINED) == [], "\n".join(
        comparison.lines())
    swapped = {s.what: (s.aws, s.source) for s in comparison.swaps}
    assert swapped["bucket"] == (BUCKET, "MLOPS_BUCKET")
    assert swapped["role"] == (ROLE, "MLOPS_ROLE_ARN")
    assert swapped["region"] == (REGION, "AWS_REGION")
    used = {name for d in comparison.differences for name in d.why.split("; ")[0].split(", ")}
    expected = {"bucket", "role"} | ({"image registry"} if kind == "training" else set())
    assert used == expected, "\n".join(comparison.lines())
