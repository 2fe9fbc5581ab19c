"""model_deploy/build.py against a moto SageMaker registry and the local SQLite registry."""

from __future__ import annotations

import dataclasses
import json
import shutil

import boto3
import pytest
from moto import mock_aws

from mlops_core import targets
from mlops_core.config import load as load_config
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore
from model_deploy import build
from tests.helpers import NAMES, REGION, register, set_status, variant

# The batch stack needs the project stack's key (the endpoint stacks make their own without).
BATCH_NAMES = dataclasses.replace(
    NAMES, kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/project-key")


@pytest.fixture(scope="module")
def moto_sagemaker():
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.setenv(key, "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        with mock_aws():
            yield boto3.client("sagemaker", region_name=REGION)


@pytest.fixture(params=["moto", "local"])
def registry(request, tmp_path):
    if request.param == "moto":
        return request.getfixturevalue("moto_sagemaker")
    return LocalRegistry(tmp_path / "registry.db", region=REGION)


class Recorder:
    """Passes calls through to a registry and counts the list calls (to see pagination)."""

    def __init__(self, client):
        self.client, self.list_calls = client, 0

    def list_model_packages(self, **request):
        self.list_calls += 1
        return self.client.list_model_packages(**request)

    def describe_model_package(self, **request):
        return self.client.describe_model_package(**request)




def test_newest_approved_wins_over_one_approved_later(registry, tmp_path, request):
    group = f"order-{request.node.callspec.id}"
    arns = register(registry, group, 7)
    for version, status in [(5, "Approved"), (3, "Rejected"), (6, "Rejected"),
                            (1, "Approved"), (2, "Approved")]:  # v1, v2 approved after v5
        set_status(registry, arns[version - 1], status)
    recorder = Recorder(registry)

    package = build.build(recorder, group, NAMES, tmp_path / "out", page_size=2)

    assert package["ModelPackageArn"] == arns[4]
    assert recorder.list_calls == 2  # three approved packages, two per page
    staging = json.loads((tmp_path / "out" / "staging-config.json").read_text())
    params = staging["Parameters"]
    assert params["ModelPackageArn"] == arns[4]
    assert params["ModelVersion"] == "5"
    assert params["ModelDataUrl"].endswith(f"{group}/v5/model.tar.gz")
    assert params["BaselineStatisticsUri"].endswith(f"{group}/v5/baseline/statistics.json")
    assert params["BaselineConstraintsUri"].endswith(f"{group}/v5/baseline/constraints.json")
    assert staging["Tags"]["mlops:model-package"] == f"{group}/5"


def test_outputs_merge_stage_files_with_package_and_names(registry, tmp_path, request):
    group = f"merge-{request.node.callspec.id}"
    (arn,) = register(registry, group, 1)
    set_status(registry, arn, "Approved")

    build.build(registry, group, NAMES, tmp_path / "out")

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "prod-config.json", "staging-config.json", "template-export.yml"]
    assert (out / "template-export.yml").read_bytes() == build.TEMPLATE.read_bytes()
    for stage in build.STAGES:
        written = json.loads((out / f"{stage}-config.json").read_text())
        source = json.loads((build.HERE / f"{stage}-config.json").read_text())
        params = written["Parameters"]
        assert all(isinstance(v, str) for v in params.values())  # CodePipeline wants strings
        for key, value in source["Parameters"].items():
            assert params[key] == str(value)
        assert params["StageName"] == stage
        assert params["ProjectName"] == "abalone"
        assert params["ArtifactBucket"] == "mlops-test"
        assert params["DriftCheckCodeUri"] == NAMES.drift_check_code_uri
        assert written["Tags"]["mlops:stage"] == stage
        assert written.get("StackPolicy") == source.get("StackPolicy")
        assert set(params) <= set(build.template_parameters())
    prod = json.loads((out / "prod-config.json").read_text())["Parameters"]
    assert int(prod["MinCapacity"]) >= 2
    assert prod["DeploymentStrategy"] == "Linear"


def test_the_rmse_tolerance_of_mlops_toml_reaches_every_stage_stack(registry, tmp_path,
                                                                    request):
    group = f"tolerance-{request.node.callspec.id}"
    (arn,) = register(registry, group, 1)
    set_status(registry, arn, "Approved")
    config = variant(tmp_path, replace={"rmse_tolerance = 1.2": "rmse_tolerance = 1.35"})
    names = build.project_names(config, targets.local(config, LocalStore(tmp_path / "s3")))

    build.build(registry, group, names, tmp_path / "out")

    for stage in build.STAGES:
        params = json.loads((tmp_path / "out" / f"{stage}-config.json").read_text())["Parameters"]
        assert params["ModelQualityRmseTolerance"] == "1.35"
    assert "ModelQualityRmseTolerance" in build.template_parameters()


def test_no_approved_package_fails_and_writes_nothing(registry, tmp_path, request):
    group = f"none-{request.node.callspec.id}"
    arns = register(registry, group, 3)
    set_status(registry, arns[0], "Rejected")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier build")

    with pytest.raises(build.BuildError, match=f"no approved model package in group '{group}'"):
        build.build(registry, group, NAMES, out)

    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] + (
        ["registry.db"] if (tmp_path / "registry.db").exists() else [])


@pytest.fixture
def approved(moto_sagemaker, request):
    group = f"cfg-{request.node.name}"[:60]
    (arn,) = register(moto_sagemaker, group, 1)
    set_status(moto_sagemaker, arn, "Approved")
    return group


def edited_configs(tmp_path, stage: str, **parameters) -> object:
    """A copy of the stage config files with some parameters replaced (None removes)."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    for name in ("staging-config.json", "prod-config.json"):
        shutil.copy(build.HERE / name, config_dir / name)
    path = config_dir / f"{stage}-config.json"
    config = json.loads(path.read_text())
    for key, value in parameters.items():
        if value is None:
            config["Parameters"].pop(key, None)
        else:
            config["Parameters"][key] = value
    path.write_text(json.dumps(config))
    return config_dir


@pytest.mark.parametrize(("stage", "edit", "message"), [
    ("staging", {"InstanceCout": "2"}, r"\['InstanceCout'\] are not in endpoint.yml"),
    ("prod", {"MinCapacity": "1"}, "prod needs MinCapacity >= 2"),
    ("staging", {"MinCapacity": "3"}, "MinCapacity is above MaxCapacity"),
    ("staging", {"MonitoringMode": "ModelMonitor"}, r"needs \['DriftAlarmFeature'\]"),
])
def test_bad_stage_config_fails_naming_it(moto_sagemaker, approved, tmp_path, stage, edit,
                                          message):
    config_dir = edited_configs(tmp_path, stage, **edit)
    with pytest.raises(build.BuildError, match=message):
        build.build(moto_sagemaker, approved, NAMES, tmp_path / "out", config_dir)
    assert not (tmp_path / "out").exists()


def test_invalid_json_names_the_file(moto_sagemaker, approved, tmp_path):
    config_dir = edited_configs(tmp_path, "prod")
    (config_dir / "prod-config.json").write_text('{"Parameters": {')
    with pytest.raises(build.BuildError, match="prod-config.json is not valid JSON"):
        build.build(moto_sagemaker, approved, NAMES, tmp_path / "out", config_dir)


def test_monitoring_needs_the_package_baseline(moto_sagemaker, tmp_path):
    group = "no-baseline"
    (arn,) = register(moto_sagemaker, group, 1, baselines=False)
    set_status(moto_sagemaker, arn, "Approved")
    with pytest.raises(build.BuildError, match=f"package {arn} has no DriftCheckBaselines"):
        build.build(moto_sagemaker, group, NAMES, tmp_path / "out")

    config_dir = tmp_path / "off"
    config_dir.mkdir()
    for stage in build.STAGES:
        config = json.loads((build.HERE / f"{stage}-config.json").read_text())
        config["Parameters"]["MonitoringMode"] = "None"
        (config_dir / f"{stage}-config.json").write_text(json.dumps(config))
    build.build(moto_sagemaker, group, NAMES, tmp_path / "out", config_dir)
    params = json.loads((tmp_path / "out" / "prod-config.json").read_text())["Parameters"]
    assert params["BaselineStatisticsUri"] == params["BaselineConstraintsUri"] == ""


def test_main_reports_a_missing_approval_then_builds(moto_sagemaker, tmp_path, monkeypatch,
                                                     capsys):
    config = load_config()
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "state"))  # its definition cache
    monkeypatch.setenv("MLOPS_BUCKET", "mlops-main")
    monkeypatch.setenv("MLOPS_ROLE_ARN", NAMES.role_arn)
    key_arn = f"arn:aws:kms:{REGION}:123456789012:key/project-key"
    monkeypatch.setenv("MLOPS_KMS_KEY_ARN", key_arn)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mlops-main")
    (arn,) = register(moto_sagemaker, config.model_package_group, 1)
    out = tmp_path / "out"

    assert build.main(["--output-dir", str(out)]) == 1
    assert config.model_package_group in capsys.readouterr().err
    assert not out.exists()

    set_status(moto_sagemaker, arn, "Approved")
    assert build.main(["--output-dir", str(out)]) == 0
    params = json.loads((out / "staging-config.json").read_text())["Parameters"]
    assert params["ModelPackageArn"] == arn
    assert params["RetrainPipelineName"] == config.pipeline_name
    batch = json.loads((out / "batch-config.json").read_text())["Parameters"]
    assert batch["ModelPackageArn"] == arn
    assert params["KmsKeyArn"] == batch["KmsKeyArn"] == key_arn
    definition = json.loads(s3.get_object(Bucket="mlops-main", Key=batch["DefinitionKey"])[
        "Body"].read())
    assert [step["Type"] for step in definition["Steps"]] == ["Model", "Transform"]
    assert "sagemaker-scikit-learn" in params["DriftCheckImageUri"]
    assert "model-monitor" in params["MonitorImageUri"]
    code = params["DriftCheckCodeUri"].removeprefix("s3://mlops-main/")
    uploaded = {o["Key"] for o in s3.list_objects_v2(Bucket="mlops-main", Prefix=code)["Contents"]}
    assert code + "drift_check.py" in uploaded


def test_batch_definition_key_adds_the_batch_stack_inputs(registry, tmp_path, request):
    group = f"batch-{request.node.callspec.id}"
    (arn,) = register(registry, group, 1)
    set_status(registry, arn, "Approved")
    key = "abalone/code/batch/0123abcd/batch-definition.json"

    build.build(registry, group, BATCH_NAMES, tmp_path / "out", batch_definition_key=key)

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "batch-config.json", "batch-template.yml", "prod-config.json", "staging-config.json",
        "template-export.yml"]
    assert (out / "batch-template.yml").read_bytes() == build.BATCH_TEMPLATE.read_bytes()
    written = json.loads((out / "batch-config.json").read_text())
    source = json.loads((build.HERE / "batch-config.json").read_text())
    assert source["Parameters"].items() <= written["Parameters"].items()
    assert {k: v for k, v in written["Parameters"].items() if k not in source["Parameters"]} == {
        "ProjectName": "abalone", "ModelPackageArn": arn, "ExecutionRoleArn": NAMES.role_arn,
        "ArtifactBucket": NAMES.bucket, "DefinitionKey": key,
        "KmsKeyArn": BATCH_NAMES.kms_key_arn}
    assert set(written["Parameters"]) <= set(build.template_parameters(build.BATCH_TEMPLATE))
    assert written["Tags"]["mlops:model-package"] == f"{group}/1"


def test_batch_stack_needs_the_project_key(registry, tmp_path, request):
    group = f"nokey-{request.node.callspec.id}"
    (arn,) = register(registry, group, 1)
    set_status(registry, arn, "Approved")
    with pytest.raises(build.BuildError, match="set MLOPS_KMS_KEY_ARN"):
        build.build(registry, group, NAMES, tmp_path / "out", batch_definition_key="k")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("edit", "message"), [
    ({"ScheduleState": "enabled"}, r"ScheduleState is 'enabled', not one of \['ENABLED'"),
    ({"TransformInstanceType": "m5.large"}, r"TransformInstanceType 'm5.large' does not match"),
    ({"Schedule": "daily"}, r"batch-config.json: parameters \['Schedule'\] are not in batch.yml"),
])
def test_bad_batch_config_fails_naming_it_and_writes_nothing(moto_sagemaker, approved, tmp_path,
                                                             edit, message):
    config_dir = edited_configs(tmp_path, "prod")
    config = json.loads((build.HERE / "batch-config.json").read_text())
    config["Parameters"].update(edit)
    (config_dir / "batch-config.json").write_text(json.dumps(config))
    with pytest.raises(build.BuildError, match=message):
        build.build(moto_sagemaker, approved, BATCH_NAMES, tmp_path / "out", config_dir,
                    batch_definition_key="k")
    assert not (tmp_path / "out").exists()


def test_main_checks_every_config_before_uploading_anything(moto_sagemaker, tmp_path,
                                                            monkeypatch, capsys):
    config = load_config()
    monkeypatch.setenv("MLOPS_BUCKET", "mlops-bad-config")
    monkeypatch.setenv("MLOPS_ROLE_ARN", NAMES.role_arn)
    monkeypatch.setenv("MLOPS_KMS_KEY_ARN", BATCH_NAMES.kms_key_arn)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mlops-bad-config")
    (arn,) = register(moto_sagemaker, f"{config.model_package_group}", 1)
    set_status(moto_sagemaker, arn, "Approved")
    config_dir = edited_configs(tmp_path, "prod")
    batch = json.loads((build.HERE / "batch-config.json").read_text())
    batch["Parameters"]["ScheduleState"] = "PAUSED"
    (config_dir / "batch-config.json").write_text(json.dumps(batch))
    out = tmp_path / "out"

    assert build.main(["--output-dir", str(out), "--config-dir", str(config_dir)]) == 1
    assert "ScheduleState is 'PAUSED'" in capsys.readouterr().err
    assert "Contents" not in s3.list_objects_v2(Bucket="mlops-bad-config")
    assert not out.exists()
