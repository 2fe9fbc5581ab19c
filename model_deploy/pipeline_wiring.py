"""CodePipeline wiring check: what each pipeline action reads is there when it runs.

`python -m model_deploy.pipeline_wiring cloudformation/*.yml` (run by `make lint`) reads every
`AWS::CodePipeline::Pipeline` of the templates and checks, for each action:

- its InputArtifacts are produced by an action of an earlier stage, or of a lower RunOrder in
  the same stage, and no artifact name is produced twice;
- its Configuration keys are the documented ones of its provider (CONFIGURATION_KEYS);
- the files it reads from an artifact exist there: a CloudFormation action's TemplatePath and
  TemplateConfiguration, a CodeBuild action's buildspec (its project's Source.BuildSpec). In the
  source artifact a file must be in the repository; in a CodeBuild output it must be in that
  project's buildspec `artifacts.files` (under `base-directory`);
- a TemplateConfiguration holds only Parameters, Tags and StackPolicy and names only parameters
  the TemplatePath template declares. For the files the deploy build writes (BUILD_WRITES),
  that is the repository's config file plus the parameters model_deploy/build.py adds.

It prints one line per problem, `Pipeline / Stage / Action: problem`, and exits 1 on any.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlops_core import templates
from mlops_core.config import ROOT
from model_deploy import build

_CODEBUILD_KEYS = frozenset({"ProjectName", "PrimarySource", "BatchEnabled", "BuildspecOverride",
                             "CombineArtifacts", "EnvironmentVariables"})
# Configuration keys by (category, provider), from the CodePipeline action structure reference.
CONFIGURATION_KEYS: dict[tuple[str, str], frozenset[str]] = {
    # https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CodestarConnectionSource.html
    ("Source", "CodeStarSourceConnection"): frozenset({
        "ConnectionArn", "FullRepositoryId", "BranchName", "OutputArtifactFormat",
        "DetectChanges"}),
    # https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CodeCommit.html
    ("Source", "CodeCommit"): frozenset({
        "RepositoryName", "BranchName", "PollForSourceChanges", "OutputArtifactFormat"}),
    # https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-S3.html
    # (the S3 source action; the S3 deploy action has other keys)
    ("Source", "S3"): frozenset({
        "S3Bucket", "S3ObjectKey", "AllowOverrideForS3ObjectKey", "PollForSourceChanges"}),
    # https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CodeBuild.html
    # (the same keys for a Build and a Test action)
    ("Build", "CodeBuild"): _CODEBUILD_KEYS,
    ("Test", "CodeBuild"): _CODEBUILD_KEYS,
    # https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CloudFormation.html
    ("Deploy", "CloudFormation"): frozenset({
        "ActionMode", "StackName", "Capabilities", "ChangeSetName", "RoleArn", "TemplatePath",
        "OutputFileName", "ParameterOverrides", "TemplateConfiguration"}),
    # https://docs.aws.amazon.com/codepipeline/latest/userguide/reference-pipeline-structure.html#structure-configuration-examples
    ("Approval", "Manual"): frozenset({"CustomData", "ExternalEntityLink", "NotificationArn"}),
}
TEMPLATE_CONFIGURATION_KEYS = ("Parameters", "Tags", "StackPolicy")  # TemplateConfiguration format


@dataclass(frozen=True)
class Written:
    """A file the deploy build writes: a copy of `source`, or (`adds` given) the config file
    `source` with the parameters build.py merges in."""

    source: str
    adds: frozenset[str] | None = None


STAGE_ADDS = frozenset({
    *build.Names("", "", "").parameters(),
    *build.package_parameters({"ModelPackageArn": "", "ModelPackageVersion": 0}),
    "StageName"})
BATCH_ADDS = frozenset({"ProjectName", "ModelPackageArn", "ExecutionRoleArn", "ArtifactBucket",
                         "DefinitionKey", "KmsKeyArn"})  # build.batch_configuration
# What build.py writes into the artifact of the CodeBuild project running this buildspec.
BUILD_WRITES: dict[str, dict[str, Written]] = {
    "model_deploy/buildspec.yml": {
        "template-export.yml": Written("cloudformation/endpoint.yml"),
        "batch-template.yml": Written("cloudformation/batch.yml"),
        "staging-config.json": Written("model_deploy/staging-config.json", STAGE_ADDS),
        "prod-config.json": Written("model_deploy/prod-config.json", STAGE_ADDS),
        build.BATCH_CONFIG: Written("model_deploy/batch-config.json", BATCH_ADDS),
    },
}


@dataclass(frozen=True)
class Action:
    where: str  # "Pipeline / Stage / Action"
    stage: int
    run_order: int
    category: str
    provider: str
    configuration: dict
    inputs: list[str]
    outputs: list[str]


def _branches(value) -> tuple[str | None, list]:
    """A Fn::If's condition and its two branches, or (None, [value])."""
    if isinstance(value, dict) and list(value) == ["Fn::If"]:
        condition, *branches = value["Fn::If"]
        return condition, branches
    return None, [value]


def _variants(provider, configuration) -> list[tuple[str, dict]]:
    """The (provider, configuration) pairs an action can have: the same Fn::If condition picks
    the same branch of both."""
    p_condition, providers = _branches(provider)
    c_condition, configurations = _branches(configuration)
    if p_condition is not None and p_condition == c_condition:
        pairs = list(zip(providers, configurations, strict=True))
    else:
        pairs = [(p, c) for p in providers for c in configurations]
    return [(p, c if isinstance(c, dict) and "Ref" not in c else {}) for p, c in pairs]


def _actions(name: str, pipeline: dict) -> list[Action]:
    actions = []
    for index, stage in enumerate(pipeline["Properties"]["Stages"]):
        for action in stage["Actions"]:
            type_id = action["ActionTypeId"]
            for provider, configuration in _variants(type_id["Provider"],
                                                     action.get("Configuration", {})):
                actions.append(Action(
                    f"{name} / {stage['Name']} / {action['Name']}", index,
                    int(action.get("RunOrder", 1)), type_id["Category"], provider, configuration,
                    [a["Name"] for a in action.get("InputArtifacts", [])],
                    [a["Name"] for a in action.get("OutputArtifacts", [])]))
    return actions


class _Pipeline:
    """One pipeline's checks; `problems` collects their messages."""

    def __init__(self, name: str, template: dict, root: Path):
        self.resources = template.get("Resources", {})
        self.root = root
        self.actions = _actions(name, self.resources[name])
        self.producers: dict[str, Action] = {}
        self.problems: list[str] = []

    def report(self, action: Action, message: str) -> None:
        line = f"{action.where}: {message}"
        if line not in self.problems:  # both branches of a Fn::If may find the same problem
            self.problems.append(line)

    def check(self) -> list[str]:
        for action in self.actions:
            for name in action.outputs:
                first = self.producers.setdefault(name, action)
                if first.where != action.where:
                    self.report(action, f"OutputArtifacts '{name}' is also produced by "
                                        f"{first.where}")
        for action in self.actions:
            self.check_inputs(action)
            self.check_keys(action)
            if action.provider == "CodeBuild":
                self.check_buildspec(action)
            elif action.provider == "CloudFormation":
                self.check_stack_files(action)
        return self.problems

    def check_inputs(self, action: Action) -> None:
        for name in action.inputs:
            producer = self.producers.get(name)
            if producer is None or (producer.stage, producer.run_order) >= (action.stage,
                                                                            action.run_order):
                self.report(action, f"InputArtifacts '{name}' is produced by no earlier action")

    def check_keys(self, action: Action) -> None:
        documented = CONFIGURATION_KEYS.get((action.category, action.provider))
        if documented is None:
            self.report(action, f"no documented Configuration keys for a {action.category} "
                                f"action of provider '{action.provider}' in CONFIGURATION_KEYS")
            return
        for key in sorted(set(action.configuration) - documented):
            self.report(action, f"Configuration key '{key}' is not one of {action.provider}'s: "
                                f"{', '.join(sorted(documented))}")

    # ------------------------------------------------------------ files in artifacts

    def project_of(self, action: Action) -> dict | None:
        """The AWS::CodeBuild::Project resource a CodeBuild action's ProjectName refers to."""
        ref = action.configuration.get("ProjectName")
        project = self.resources.get(ref.get("Ref")) if isinstance(ref, dict) else None
        return project if project and project.get("Type") == "AWS::CodeBuild::Project" else None

    def buildspec_of(self, action: Action) -> str | None:
        """The repository path of the buildspec a CodeBuild action runs (None: inline, in S3,
        or its project is unknown)."""
        spec = action.configuration.get("BuildspecOverride")
        if spec is None:
            project = self.project_of(action)
            if project is None:
                return None
            spec = project["Properties"].get("Source", {}).get("BuildSpec") or "buildspec.yml"
        if not isinstance(spec, str) or "\n" in spec or spec.startswith("arn:"):
            return None
        return spec

    def in_artifact(self, action: Action, key: str, reference: str) -> tuple[str, str] | None:
        """Check `Artifact::path` is in an input artifact of `action`; return (the producer's
        buildspec or "" for the source, the path) when it is there. A CodeBuild producer's
        buildspec is read from the repository."""
        artifact, separator, path = reference.partition("::")
        if not separator:
            self.report(action, f"{key} '{reference}' is not ArtifactName::path")
            return None
        if artifact not in action.inputs:
            self.report(action, f"{key} '{reference}': '{artifact}' is not an input artifact")
            return None
        producer = self.producers.get(artifact)
        if producer is None:
            return None  # reported as an input produced by no earlier action
        if producer.category == "Source":
            if not (self.root / path).is_file():
                self.report(action, f"{key} '{reference}': no file {path} in the repository")
                return None
            return "", path
        spec = self.buildspec_of(producer) if producer.provider == "CodeBuild" else None
        if spec is None or not (self.root / spec).is_file():
            return None  # nothing to read the artifact's files from; reported at the producer
        artifacts = (yaml.safe_load((self.root / spec).read_text()) or {}).get("artifacts") or {}
        base = artifacts.get("base-directory")
        patterns = artifacts.get("files", [])
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
            where = f" (base-directory {base})" if base else ""
            self.report(action, f"{key} '{reference}': {path} is not in {spec} "
                                f"artifacts.files{where}")
            return None
        return spec, path

    def check_buildspec(self, action: Action) -> None:
        if self.project_of(action) is None:
            self.report(action, "ProjectName is not a Ref to an AWS::CodeBuild::Project of "
                                "the template")
        primary = action.configuration.get("PrimarySource")
        if primary is None and len(action.inputs) > 1:
            self.report(action, "PrimarySource is needed with more than one input artifact")
            return
        if primary is not None and primary not in action.inputs:
            self.report(action, f"PrimarySource '{primary}' is not an input artifact")
            return
        primary = primary or (action.inputs[0] if action.inputs else None)
        spec = self.buildspec_of(action)
        if primary is None or spec is None:
            return
        self.in_artifact(action, "buildspec", f"{primary}::{spec}")

    def source_file(self, action: Action, key: str, reference) -> tuple[str, Written | None]:
        """The repository file behind a referenced artifact file, and how the build wrote it
        (None: it is that repository file itself); ("", None) when unknown or missing."""
        if not isinstance(reference, str):
            return "", None
        found = self.in_artifact(action, key, reference)
        if found is None:
            return "", None
        spec, path = found
        if not spec:
            return path, None
        written = BUILD_WRITES.get(spec, {}).get(path)
        if written is None:
            self.report(action, f"{key} '{reference}': BUILD_WRITES does not say what {spec} "
                                f"writes as {path}")
            return "", None
        if not (self.root / written.source).is_file():
            self.report(action, f"{key} '{reference}': BUILD_WRITES names {written.source}, "
                                f"which is not in the repository")
            return "", None
        return written.source, written

    def check_stack_files(self, action: Action) -> None:
        configuration = action.configuration
        template, _ = self.source_file(action, "TemplatePath", configuration.get("TemplatePath"))
        declared = set(templates.load(self.root / template).get("Parameters", {})) \
            if template else None
        overrides = configuration.get("ParameterOverrides")
        if declared is not None and isinstance(overrides, str):
            self.check_declared(action, "ParameterOverrides", set(json.loads(overrides)),
                                declared, template)
        reference = configuration.get("TemplateConfiguration")
        source, written = self.source_file(action, "TemplateConfiguration", reference)
        if not source:
            return
        key = f"TemplateConfiguration '{reference}'"
        if written is not None:
            key += f" (from {source})"
        try:
            document = json.loads((self.root / source).read_text())
        except json.JSONDecodeError as err:
            self.report(action, f"{key} is not valid JSON: {err}")
            return
        extra = sorted(set(document) - set(TEMPLATE_CONFIGURATION_KEYS))
        if extra:
            self.report(action, f"{key} has keys {extra}, not only "
                                f"{', '.join(TEMPLATE_CONFIGURATION_KEYS)}")
        if declared is not None:
            adds = written.adds if written and written.adds else frozenset()
            names = set(document.get("Parameters", {})) | adds
            self.check_declared(action, key, names, declared, template)

    def check_declared(self, action: Action, key: str, names: set[str], declared: set[str],
                       template: str) -> None:
        unknown = sorted(names - declared)
        if unknown:
            self.report(action, f"{key} names parameters {unknown} that {template} "
                                f"(TemplatePath) does not declare")


def check(paths: list[Path], root: Path = ROOT) -> tuple[list[str], int]:
    """Every problem of every pipeline in the templates, and how many pipelines there are."""
    problems, count = [], 0
    for path in paths:
        template = templates.load(path)
        for name, resource in template.get("Resources", {}).items():
            if resource.get("Type") == "AWS::CodePipeline::Pipeline":
                count += 1
                problems += _Pipeline(name, template, Path(root)).check()
    return problems, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("templates", nargs="+", type=Path)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the repository the pipelines' source artifact holds")
    args = parser.parse_args(argv)
    problems, count = check(args.templates, args.root)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"pipeline wiring: {count} pipelines in {len(args.templates)} templates wired")
    return 0


if __name__ == "__main__":
    sys.exit(main())
