"""model_deploy.pipeline_wiring: the project's CodePipelines pass, and each kind of miswiring
in a copy of the repository is named by pipeline, stage, action and key."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_core.config import ROOT
from mlops_core.names import STAGES
from model_deploy import build, pipeline_wiring

TEMPLATES = sorted((ROOT / "cloudformation").glob("*.yml"))
STAGING = "ModelDeployPipeline / DeployStaging / DeployStagingStack"
PROD = "ModelDeployPipeline / DeployProd / DeployProdStack"


@pytest.fixture
def repo(tmp_path) -> Path:
    """A copy of what the pipelines read from the repository."""
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("cloudformation", "model_deploy"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=ignore)
    shutil.copyfile(ROOT / "buildspec.yml", tmp_path / "buildspec.yml")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first `old` in the file (which must hold it)."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def problems(repo: Path) -> list[str]:
    return pipeline_wiring.check(sorted((repo / "cloudformation").glob("*.yml")), repo)[0]


def test_the_projects_pipelines_are_wired():
    assert pipeline_wiring.check(TEMPLATES) == ([], 2)


def test_make_lint_runs_the_check_as_a_process():
    assert "python -m model_deploy.pipeline_wiring cloudformation/*.yml" in (
        ROOT / "Makefile").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "model_deploy.pipeline_wiring",
         *(str(p.relative_to(ROOT)) for p in TEMPLATES)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "pipeline wiring: 2 pipelines in 3 templates wired\n"


def test_a_renamed_artifact_is_named_where_it_is_missing(repo, capsys):
    edit(repo / "cloudformation" / "project.yml",
         "OutputArtifacts: [{Name: BuildOutput}]", "OutputArtifacts: [{Name: BuildOutputs}]")
    assert pipeline_wiring.main([str(p) for p in (repo / "cloudformation").glob("*.yml")]
                                + ["--root", str(repo)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert f"{STAGING}: InputArtifacts 'BuildOutput' is produced by no earlier action" in printed
    assert f"{PROD}: InputArtifacts 'BuildOutput' is produced by no earlier action" in printed


def test_a_misspelt_configuration_key_is_named(repo):
    edit(repo / "cloudformation" / "project.yml",
         "TemplatePath: BuildOutput::template-export.yml",
         "TemplatPath: BuildOutput::template-export.yml")
    found = problems(repo)
    assert len(found) == 1
    assert found[0].startswith(f"{STAGING}: Configuration key 'TemplatPath' is not one of "
                               "CloudFormation's: ActionMode, Capabilities")


def test_a_file_missing_from_the_buildspec_artifacts_is_named(repo):
    edit(repo / "model_deploy" / "buildspec.yml", "    - staging-config.json\n", "")
    assert problems(repo) == [
        f"{STAGING}: TemplateConfiguration 'BuildOutput::staging-config.json': "
        "staging-config.json is not in model_deploy/buildspec.yml artifacts.files "
        "(base-directory build/deploy)"]


@pytest.mark.parametrize("path, old, new, expected", [
    ("cloudformation/project.yml", "InputArtifacts: [{Name: SourceOutput}]\n"
     "              OutputArtifacts: [{Name: BuildOutput}]", "InputArtifacts: [{Name: "
     "BuildOutput}]\n              OutputArtifacts: [{Name: BuildOutput}]",
     "ModelDeployPipeline / Build / StageConfigs: InputArtifacts 'BuildOutput' is produced by"
     " no earlier action"),
    ("cloudformation/project.yml", "OutputArtifacts: [{Name: ModelBuildOutput}]",
     "OutputArtifacts: [{Name: SourceOutput}]",
     "ModelBuildPipeline / BuildAndTrain / LintTestTrain: OutputArtifacts 'SourceOutput' is"
     " also produced by ModelBuildPipeline / Source / Source"),
    ("cloudformation/project.yml", "PrimarySource: SourceOutput", "BatchEnabled: 'false'",
     "ModelDeployPipeline / DeployStaging / TestStaging: PrimarySource is needed with more"
     " than one input artifact"),
    ("cloudformation/project.yml", "{ProjectName: !Ref ModelBuildProject}",
     "{ProjectName: abalone-model-build}",
     "ModelBuildPipeline / BuildAndTrain / LintTestTrain: ProjectName is not a Ref to an"
     " AWS::CodeBuild::Project of the template"),
    ("cloudformation/project.yml", "BuildSpec: buildspec.yml", "BuildSpec: build-spec.yml",
     "ModelBuildPipeline / BuildAndTrain / LintTestTrain: buildspec 'SourceOutput::build-spec"
     ".yml': no file build-spec.yml in the repository"),
    ("cloudformation/project.yml", "BuildOutput::prod-config.json", "BuildOutput::batch-config"
     ".json", f"{PROD}: TemplateConfiguration 'BuildOutput::batch-config.json' (from"
     " model_deploy/batch-config.json) names parameters ['DefinitionKey', 'ScheduleState',"
     " 'ScheduleTimezone', 'TransformInstanceType'] that cloudformation/endpoint.yml"
     " (TemplatePath) does not declare"),
    ("model_deploy/prod-config.json", '"Tags"', '"Outputs": {}, "Tags"',
     f"{PROD}: TemplateConfiguration 'BuildOutput::prod-config.json' (from"
     " model_deploy/prod-config.json) has keys ['Outputs'], not only Parameters, Tags,"
     " StackPolicy"),
])
def test_each_miswiring_is_named(repo, path, old, new, expected):
    edit(repo / path, old, new)
    assert expected in problems(repo)


def test_build_writes_say_what_build_py_writes():
    writes = pipeline_wiring.BUILD_WRITES["model_deploy/buildspec.yml"]
    sources = {name: ROOT / written.source for name, written in writes.items()}
    assert sources == {"template-export.yml": build.TEMPLATE,
                       "batch-template.yml": build.BATCH_TEMPLATE,
                       **{f"{stage}-config.json": build.HERE / f"{stage}-config.json"
                          for stage in STAGES},
                       build.BATCH_CONFIG: build.HERE / build.BATCH_CONFIG}


def test_batch_parameters_are_the_ones_the_build_adds():
    config = build.read_stage_config(build.HERE / build.BATCH_CONFIG)
    package = {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
               "ModelPackageVersion": 1, "ModelPackageGroupName": "g"}
    names = build.Names("abalone", "bucket", "arn:aws:iam::123456789012:role/r",
                        kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/k")
    written = build.batch_configuration(config, package, names, "abalone/code/batch/x.json")
    added = set(written["Parameters"]) - set(config["Parameters"])
    assert added == pipeline_wiring.BATCH_ADDS
