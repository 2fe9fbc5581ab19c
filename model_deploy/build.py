"""Deploy build: the newest approved model package -> CloudFormation inputs for each stage.

Runs in the deploy CodeBuild stage (`make deploy-build`) and locally. It writes, into one
output directory, `template-export.yml` (the endpoint template) and `<stage>-config.json` per
stage in CodePipeline's TemplateConfiguration format: the stage's config file merged with the
chosen package (ARN, version, model data, drift baselines) and the project's names. Given the
key of the batch definition (the AWS build always has one), it also writes
`batch-template.yml` and `batch-config.json` for the scheduled batch scoring stack. Nothing is
written, and on AWS nothing uploaded, unless every configuration passes its checks.

The sagemaker client is injected: a boto3 client, or `mlops_local.registry.LocalRegistry`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlops_core import targets, templates
from mlops_core.config import ROOT, Config, ConfigError, Monitoring
from mlops_core.config import load as load_config
from mlops_core.files import content_hash
from mlops_core.names import STAGES
from mlops_core.targets import Target, TargetError
from model_build import definition
from model_deploy import stacks

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent / "cloudformation" / "endpoint.yml"
BATCH_TEMPLATE = HERE.parent / "cloudformation" / "batch.yml"
# Where the deploy build writes the templates and stack configurations (the build output
# artifact in CodePipeline, build/deploy locally).
BUILD_DIR = ROOT / "build" / "deploy"
BATCH_CONFIG = "batch-config.json"
MONITOR_CODE = HERE / "monitoring"
CONTRACT = ROOT / "model_build" / "scripts" / "contract.py"


def _batch_factory():
    from model_deploy.batch import get_batch_pipeline  # imports the SDK: only to build

    return get_batch_pipeline


BATCH = definition.Kind("batch", _batch_factory,
                        (HERE / "batch.py", definition.PIPELINE_SOURCES),
                        ROOT / "build" / "batch-definition.json")
# The endpoint template copies the baselines to fixed local names (docs/contracts.md).
BASELINE_FILES = {"BaselineStatisticsUri": "statistics.json",
                  "BaselineConstraintsUri": "constraints.json"}


class BuildError(ValueError):
    """The deploy build cannot produce stage configurations; the message says why."""


@dataclass(frozen=True)
class Names:
    """Project-level names every stage's stack needs."""

    project: str
    bucket: str
    role_arn: str
    retrain_pipeline: str = ""
    drift_check_code_uri: str = ""
    drift_check_image_uri: str = ""
    monitor_image_uri: str = ""
    kms_key_arn: str = ""  # the project's key; empty: the endpoint stack creates its own
    rmse_tolerance: float = Monitoring.rmse_tolerance  # mlops.toml's, as the local check uses

    def parameters(self) -> dict[str, str]:
        return {
            "ProjectName": self.project,
            "ArtifactBucket": self.bucket,
            "ExecutionRoleArn": self.role_arn,
            "RetrainPipelineName": self.retrain_pipeline,
            "DriftCheckCodeUri": self.drift_check_code_uri,
            "DriftCheckImageUri": self.drift_check_image_uri,
            "MonitorImageUri": self.monitor_image_uri,
            "KmsKeyArn": self.kms_key_arn,
            "ModelQualityRmseTolerance": str(self.rmse_tolerance),
        }


# ---------------------------------------------------------------------------- registry


def newest_approved_package(client, group: str, page_size: int = 100) -> dict:
    """Describe the approved package created last in `group` (newest, not last approved)."""
    summaries, token = [], None
    while True:
        request = {"ModelPackageGroupName": group, "ModelApprovalStatus": "Approved",
                   "SortBy": "CreationTime", "SortOrder": "Descending",
                   "MaxResults": page_size}
        if token:
            request["NextToken"] = token
        page = client.list_model_packages(**request)
        summaries += page.get("ModelPackageSummaryList", [])
        token = page.get("NextToken")
        if not token:
            break
    if not summaries:
        raise BuildError(f"no approved model package in group '{group}': approve one first")
    # Pages can be empty before the last one, so rank all rather than trusting the first row.
    newest = max(summaries, key=lambda s: (s["CreationTime"], s["ModelPackageVersion"]))
    return client.describe_model_package(ModelPackageName=newest["ModelPackageArn"])


def package_parameters(package: dict) -> dict[str, str]:
    """The stack parameters that come from the chosen package."""
    containers = package.get("InferenceSpecification", {}).get("Containers", [{}])
    quality = package.get("DriftCheckBaselines", {}).get("ModelDataQuality", {})
    return {
        "ModelPackageArn": package["ModelPackageArn"],
        "ModelVersion": str(package["ModelPackageVersion"]),
        "ModelDataUrl": containers[0].get("ModelDataUrl", ""),
        "BaselineStatisticsUri": quality.get("Statistics", {}).get("S3Uri", ""),
        "BaselineConstraintsUri": quality.get("Constraints", {}).get("S3Uri", ""),
    }


# ---------------------------------------------------------------------------- stage configs


def template_parameters(template: Path = TEMPLATE) -> dict[str, dict]:
    """The template's Parameters section."""
    return templates.load(template)["Parameters"]


def read_stage_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError(f"stage config not found: {path}") from None
    except json.JSONDecodeError as err:
        raise BuildError(f"{path.name} is not valid JSON: {err}") from None
    if not isinstance(config.get("Parameters"), dict):
        raise BuildError(f"{path.name} needs a \"Parameters\" object")
    unknown = set(config) - {"Parameters", "Tags", "StackPolicy"}
    if unknown:
        raise BuildError(f"{path.name} has unknown keys {sorted(unknown)}")
    return config


def stage_configuration(stage: str, config: dict, package: dict, names: Names,
                        declared: dict[str, dict], source: str) -> dict:
    """One stage's TemplateConfiguration: the stage file, then the package and project names."""
    parameters = {key: str(value) for key, value in config["Parameters"].items()}
    parameters.update(names.parameters())
    parameters.update(package_parameters(package))
    parameters["StageName"] = stage
    check_parameters(parameters, declared, package, source)
    return _configuration(config, parameters, package, names, {"mlops:stage": stage})


def batch_configuration(config: dict, package: dict, names: Names, definition_key: str,
                        source: str = BATCH_CONFIG) -> dict:
    """The batch stack's TemplateConfiguration: the batch config file, then the package, the
    uploaded batch definition and the project's names."""
    if not names.kms_key_arn:
        raise BuildError("the batch stack needs the project's KMS key: set MLOPS_KMS_KEY_ARN "
                         "to the project stack's KmsKeyArn output")
    parameters = {key: str(value) for key, value in config["Parameters"].items()}
    parameters.update({
        "ProjectName": names.project,
        "ModelPackageArn": package["ModelPackageArn"],
        "ExecutionRoleArn": names.role_arn,
        "ArtifactBucket": names.bucket,
        "DefinitionKey": definition_key,
        "KmsKeyArn": names.kms_key_arn,
    })
    check_declared(parameters, template_parameters(BATCH_TEMPLATE), BATCH_TEMPLATE, source)
    return _configuration(config, parameters, package, names, {"mlops:stage": "batch"})


def _configuration(config: dict, parameters: dict[str, str], package: dict, names: Names,
                   tags: dict[str, str]) -> dict:
    version = package["ModelPackageVersion"]
    result = {
        "Parameters": parameters,
        "Tags": {
            **{key: str(value) for key, value in config.get("Tags", {}).items()},
            "mlops:project": names.project,
            **tags,
            "mlops:model-package": f"{package['ModelPackageGroupName']}/{version}",
        },
    }
    if "StackPolicy" in config:
        result["StackPolicy"] = config["StackPolicy"]
    return result


def check_declared(parameters: dict[str, str], declared: dict[str, dict], template: Path,
                   source: str, may_be_empty: tuple[str, ...] = ()) -> None:
    """Refuse parameters the template does not declare, lacks or would reject by its
    AllowedValues or AllowedPattern, as CloudFormation would later."""
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise BuildError(f"{source}: parameters {unknown} are not in {template.name}")
    missing = sorted(k for k, spec in declared.items() if "Default" not in spec
                     and not parameters.get(k) and k not in may_be_empty)
    if missing:
        raise BuildError(f"{source}: parameters {missing} need a value")
    for key, value in parameters.items():
        allowed = declared[key].get("AllowedValues")
        if allowed is not None and value not in [str(v) for v in allowed]:
            raise BuildError(f"{source}: {key} is {value!r}, not one of {allowed}")
        pattern = declared[key].get("AllowedPattern")
        if pattern is not None and value and not re.fullmatch(pattern, value):
            raise BuildError(f"{source}: {key} {value!r} does not match {pattern}")


def check_parameters(parameters: dict[str, str], declared: dict[str, dict], package: dict,
                     source: str) -> None:
    """Refuse what CloudFormation would refuse later, or a stack that cannot monitor."""
    # An empty baseline is legal without monitoring; the monitoring check below covers it.
    check_declared(parameters, declared, TEMPLATE, source, tuple(BASELINE_FILES))
    for key in ("InitialInstanceCount", "MinCapacity", "MaxCapacity"):
        if key in parameters and not parameters[key].isdigit():
            raise BuildError(f"{source}: {key} must be a whole number, not {parameters[key]!r}")
    if int(parameters.get("MinCapacity", 1)) > int(parameters.get("MaxCapacity", 2)):
        raise BuildError(f"{source}: MinCapacity is above MaxCapacity")
    if parameters["StageName"] == "prod" and int(parameters.get("MinCapacity", 1)) < 2:
        raise BuildError(f"{source}: prod needs MinCapacity >= 2 so instances span two AZs")
    mode = parameters.get("MonitoringMode", declared["MonitoringMode"]["Default"])
    if mode == "None":
        return
    arn = package["ModelPackageArn"]
    for key, filename in BASELINE_FILES.items():
        uri = parameters[key]
        if not uri:
            raise BuildError(f"{source}: MonitoringMode {mode} needs a drift baseline, and "
                             f"package {arn} has no DriftCheckBaselines.ModelDataQuality")
        if not uri.endswith("/" + filename):
            raise BuildError(f"package {arn}: baseline {uri} is not named {filename}")
    needs = {"Pipeline": ("DriftCheckCodeUri", "DriftCheckImageUri"),
             "ModelMonitor": ("MonitorImageUri", "DriftAlarmFeature")}[mode]
    empty = [key for key in needs if not parameters.get(key)]
    if empty:
        raise BuildError(f"{source}: MonitoringMode {mode} needs {empty}")


# ---------------------------------------------------------------------------- build


def build(client, group: str, names: Names, output_dir: Path,
          config_dir: Path = HERE, page_size: int = 100,
          batch_definition_key: str | None = None) -> dict:
    """Write the templates and every stack's configuration; return the chosen package."""
    package, templates_out, documents = render(client, group, names, config_dir, page_size,
                                               batch_definition_key)
    publish(templates_out, documents, Path(output_dir))
    return package


def render(client, group: str, names: Names, config_dir: Path = HERE, page_size: int = 100,
           batch_definition_key: str | None = None
           ) -> tuple[dict, dict[str, Path], dict[str, dict]]:
    """Choose the package and check every stack's configuration, writing nothing: the package,
    the templates to copy and the configurations, by output file name."""
    package = newest_approved_package(client, group, page_size)
    declared = template_parameters()
    documents = {}
    for stage in STAGES:
        path = Path(config_dir) / f"{stage}-config.json"
        config = read_stage_config(path)
        documents[path.name] = stage_configuration(stage, config, package, names, declared,
                                                   path.name)
    templates_out = {"template-export.yml": TEMPLATE}
    if batch_definition_key is not None:
        config = read_stage_config(Path(config_dir) / BATCH_CONFIG)
        documents[BATCH_CONFIG] = batch_configuration(config, package, names,
                                                      batch_definition_key)
        templates_out["batch-template.yml"] = BATCH_TEMPLATE
    return package, templates_out, documents


def publish(templates_out: dict[str, Path], documents: dict[str, dict], output_dir: Path) -> None:
    """Write everything beside the output directory first, then move it into place."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=".deploy-build-") as tmp:
        staging = Path(tmp)
        for name, template in templates_out.items():
            shutil.copyfile(template, staging / name)
        for name, document in documents.items():
            (staging / name).write_text(json.dumps(document, indent=2) + "\n")
        output_dir.mkdir(exist_ok=True)
        for item in staging.iterdir():
            item.replace(output_dir / item.name)


# ---------------------------------------------------------------------------- CLI (AWS)


def monitor_code(target: Target, project: str) -> tuple[str, list[Path]]:
    """The drift check, its helpers and the data contract, and the content-addressed prefix
    they go under (the monitoring job runs them side by side)."""
    files = sorted([*MONITOR_CODE.glob("*.py"), CONTRACT])
    return f"s3://{target.bucket}/{project}/code/drift-check/{content_hash(*files)}/", files


def project_names(config: Config, target: Target) -> Names:
    """The names every stage's stack needs (the drift check code's URI, not yet uploaded)."""
    sklearn_image, monitor_image = processing_images(target.region,
                                                     config.sklearn_framework_version)
    return Names(
        project=config.project, bucket=target.bucket, role_arn=target.role,
        retrain_pipeline=config.pipeline_name,
        drift_check_code_uri=monitor_code(target, config.project)[0],
        drift_check_image_uri=sklearn_image, monitor_image_uri=monitor_image,
        kms_key_arn=project_kms_key(target), rmse_tolerance=config.monitoring.rmse_tolerance,
    )


def project_kms_key(target: Target) -> str:
    """The key the project stack encrypts its buckets with (CodeBuild gets it as
    MLOPS_KMS_KEY_ARN); empty locally, where the stacks make or need none."""
    return os.environ.get("MLOPS_KMS_KEY_ARN", "") if target.name == "aws" else ""


def processing_images(region: str, framework_version: str) -> tuple[str, str]:
    """The scikit-learn and Model Monitor images of the region (the SDK's tables, no call)."""
    from sagemaker.core import image_uris  # slow to import: only the CLI needs it

    sklearn = image_uris.retrieve("sklearn", region=region, version=framework_version,
                                  instance_type="ml.m5.large")
    return sklearn, image_uris.retrieve("model-monitor", region=region)


def build_batch_definition(config: Config, target: Target) -> str:
    """Build the batch definition for `target`; return the content-addressed key it is
    uploaded under (the batch stack's DefinitionKey)."""
    definition.load_or_build(config, target, force=True, kind=BATCH)
    return f"{config.project}/code/batch/{content_hash(BATCH.output)}/{BATCH.output.name}"


def upload_batch_definition(target: Target, key: str) -> None:
    target.upload(BATCH.output, f"s3://{target.bucket}/{key}")


def deploy_batch_stack(config: Config, target: Target, *, sagemaker, cloudformation,
                    echo=print, **parameters: str) -> dict[str, str]:
    """`mlops batch deploy`: upload the batch definition, create or update `<project>-batch`.

    The same parameters the deploy pipeline's batch action uses (`model_deploy/batch-config.json`
    with the newest approved package); extra keyword arguments override them
    (ScheduleExpression, TransformInstanceType, ...). The deploy pipeline redeploys the stack
    after each production deployment; this is for a project without it, or to change the
    schedule by hand.
    """
    package = newest_approved_package(sagemaker, config.model_package_group)
    names = Names(project=config.project, bucket=target.bucket, role_arn=target.role,
                        kms_key_arn=project_kms_key(target))
    key = build_batch_definition(config, target)
    configuration = batch_configuration(read_stage_config(HERE / BATCH_CONFIG), package, names,
                                        key)
    upload_batch_definition(target, key)
    echo(f"{config.batch_pipeline_name}: scoring with {package['ModelPackageArn']}")
    return stacks.deploy(config.batch_pipeline_name,
                         {**configuration["Parameters"], **parameters},
                         cloudformation, template=BATCH_TEMPLATE, echo=echo)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=BUILD_DIR)
    parser.add_argument("--config-dir", type=Path, default=HERE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import boto3  # the AWS target is the only place a real client is made
    from botocore.exceptions import BotoCoreError, ClientError

    args = parse_args(argv)
    try:
        config = load_config()
        target = targets.aws(config)
        names = project_names(config, target)
        batch_key = build_batch_definition(config, target)
        # Check every configuration before anything is uploaded or written.
        package, templates_out, documents = render(
            boto3.client("sagemaker", region_name=target.region), config.model_package_group,
            names, args.config_dir, batch_definition_key=batch_key)
        prefix, files = monitor_code(target, config.project)
        for path in files:
            target.upload(path, prefix + path.name)
        upload_batch_definition(target, batch_key)
        publish(templates_out, documents, args.output_dir)
    except (BuildError, ConfigError, TargetError, BotoCoreError, ClientError) as err:
        print(f"deploy build failed: {err}", file=sys.stderr)
        return 1
    print(f"deploy build: {package['ModelPackageArn']} -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
