"""`mlops`: the one command line for the project; every Makefile target is one call of it.

Heavy modules (the sagemaker SDK, pandas, scikit-learn, boto3) are imported inside the
command that needs them, so `mlops registry list` answers at once.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import threading
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlops.console import DEFAULT_PORT
from mlops_core import config as project_config
from mlops_core.names import STAGES, TARGETS
from model_build.sagemaker_pipeline import WAIT_MINUTES

console = Console(highlight=False)
errors = Console(highlight=False, stderr=True, soft_wrap=True)  # one line per error, for logs


class UsageError(ValueError):
    """A command line that cannot be carried out as given."""


def _target_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=TARGETS, default="local",
                        help="run on this machine (default) or in the AWS account")


def _diff_profile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=TARGETS, default="local",
                        help="the profile of the local side (default local; aws: the "
                             "rehearsal, which should differ only in names)")


def _parameters(pairs: list[str]) -> dict:
    parameters = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"pipeline parameter {pair!r} is not NAME=VALUE")
        parameters[name] = value
    return parameters


def _table(title: str, columns: list[str], rows: list[list]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    return table


# pipeline ---------------------------------------------------------------------------------

def cmd_pipeline_definition(args) -> int:
    from mlops_core import targets
    from mlops_local.store import LocalStore
    from model_build import definition

    config = project_config.load()
    target = targets.aws(config) if args.target == "aws" else targets.local(config, LocalStore())
    _, reused = definition.load_or_build(config, target, force=args.force)
    how = "reused (nothing changed)" if reused else "built"
    console.print(f"pipeline definition {how}: {definition.DEFINITION_FILE}")
    return 0


def cmd_pipeline_upsert(args) -> int:
    _upsert(project_config.load())
    return 0


def _upsert(config):
    import boto3

    from mlops_core import targets
    from model_build import definition, sagemaker_pipeline

    target = targets.aws(config)
    pipeline, _ = definition.load_or_build(config, target, force=True)
    client = boto3.client("sagemaker", region_name=target.region)
    arn = sagemaker_pipeline.upsert(client, config.pipeline_name, pipeline, target.role,
                                    description=f"{config.project} training pipeline")
    console.print(f"pipeline upserted: {arn}")
    return client


def cmd_pipeline_run(args) -> int:
    config = project_config.load()
    parameters = _parameters(args.param)
    if args.definition and args.target == "aws":
        raise UsageError("--definition runs a definition file locally; it takes no --target aws")
    if args.profile and (args.target == "aws" or args.definition):
        raise UsageError("--profile rehearses a target's definition on this machine; it takes "
                         "no --target aws or --definition")
    if args.target == "aws":
        return _run_aws(config, parameters, args.wait, args.wait_minutes)
    from mlops_local import warm

    # The jobs' fork server imports pandas and scikit-learn on the other core while this
    # process imports the engine and builds (or checks) the definition.
    warm.prepare()
    from mlops import local_pipeline

    if args.definition:
        result = local_pipeline.run_definition(args.definition, parameters, config, console)
    else:
        result = local_pipeline.run(config, parameters, console=console,
                                    profile=args.profile or "local")
    return 0 if result.succeeded else 1


def cmd_pipeline_diff(args) -> int:
    from model_build import definition

    return _diff(args.profile, definition.TRAINING)


def _diff(profile: str, kind) -> int:
    from mlops import local_pipeline
    from model_build import rehearsal

    config = project_config.load()
    with console.status("building both definitions (imports the sagemaker SDK)..."):
        comparison = local_pipeline.diff(config, profile, kind)
    console.print(f"the aws side is built offline, uploading only to "
                  f"{local_pipeline.aws_offline_root()}", markup=False, soft_wrap=True)
    for line in comparison.lines():
        console.print(line, markup=False, soft_wrap=True)
    return 1 if comparison.of(rehearsal.UNEXPLAINED) else 0


def _run_aws(config, parameters: dict, wait: bool, minutes: float) -> int:
    from model_build import sagemaker_pipeline

    client = _upsert(config)
    execution_arn = sagemaker_pipeline.start(client, config.pipeline_name, parameters)
    console.print(f"execution started: {execution_arn}")
    if not wait:
        return 0

    def report(status, steps):
        console.print(f"[bold]{status}[/bold] " + ", ".join(
            f"{s['StepName']}={s.get('StepStatus', '?')}" for s in steps))
        for step in steps:
            if step.get("FailureReason"):
                console.print(f"  {step['StepName']}: {step['FailureReason']}")

    execution = sagemaker_pipeline.wait(client, execution_arn, report, minutes=minutes)
    status = execution["PipelineExecutionStatus"]
    if status != "Succeeded":
        reason = execution.get("FailureReason", "see the failed steps above")
        console.print(f"[red]pipeline execution {status}: {reason}[/red]")
        return 1
    return 0


def cmd_pipeline_executions(args) -> int:
    from mlops import local_pipeline

    console.print(local_pipeline.executions_table(project_config.load()))
    return 0


def cmd_pipeline_steps(args) -> int:
    from mlops import local_pipeline

    console.print(local_pipeline.steps_table(args.execution))
    return 0


def cmd_pipeline_stop(args) -> int:
    from mlops_local.engine import runner

    with console.status(f"stopping execution {args.execution}..."):
        execution = runner.stop(args.execution)
    status = execution["PipelineExecutionStatus"]
    console.print(f"execution {args.execution}: {status}")
    if status == "Stopped":
        return 0
    console.print(f"[red]{escape(execution.get('FailureReason') or '')}[/red]")
    return 1


# registry ---------------------------------------------------------------------------------

def _registry():
    from mlops_local.registry import LocalRegistry

    return LocalRegistry()


def cmd_registry_list(args) -> int:
    config = project_config.load()
    registry = _registry()
    summaries = registry.list_model_packages(
        ModelPackageGroupName=config.model_package_group, SortOrder="Descending", MaxResults=1000
    )["ModelPackageSummaryList"]
    rows = []
    for summary in summaries:
        package = registry.describe_model_package(summary["ModelPackageArn"])
        rows.append([summary["ModelPackageVersion"], summary["ModelApprovalStatus"],
                     summary["CreationTime"][:19].replace("T", " "), _metric(package, config),
                     package.get("ApprovalDescription", "")])
    if not rows:
        console.print(f"no model package in {config.model_package_group} yet: run `make pipeline`")
        return 0
    console.print(_table(f"model packages in {config.model_package_group}",
                         ["version", "status", "created (UTC)", config.metric, "note"], rows))
    return 0


def _metric(package: dict, config) -> str:
    """The evaluation metric of a package, read from its registered ModelQuality statistics."""
    from mlops_local import review

    try:
        return f"{review.evaluation(package)['regression_metrics'][config.metric]['value']:.3f}"
    except (KeyError, TypeError, ValueError):
        return "?"


def _set_status(version: str, status: str, note: str) -> int:
    from mlops_local import review

    group = project_config.load().model_package_group
    change = review.set_status(group, version, status, note)
    if not change.changed:
        console.print(change.unchanged)
        return 0
    console.print(f"{change.name}: {status}")
    for stage in change.serving:
        errors.print(f"[yellow]warning:[/yellow] the local {stage} endpoint still serves "
                     f"{change.name}: deploy another approved version with `mlops deploy "
                     f"{stage}` or stop it with `mlops endpoint stop {stage}`")
    return 0


def cmd_registry_approve(args) -> int:
    return _set_status(args.version, "Approved", args.note or "approved from the command line")


def cmd_registry_reject(args) -> int:
    return _set_status(args.version, "Rejected", args.note or "rejected from the command line")


# deploy, endpoint, monitor ----------------------------------------------------------------

def cmd_deploy(args) -> int:
    from mlops_local import deploy

    record = deploy.deploy(project_config.load(), args.stage)
    model = record["model_info"]
    console.print(f"{args.stage}: {model['ModelPackageGroupName']}/{model['ModelPackageVersion']}"
                  f" serving at {record['url']} (pid {record['pid']}); capture: "
                  f"{record['capture_uri']}")
    if args.stage == "staging":
        console.print("next: `mlops endpoint test staging`, then `mlops deploy prod`")
    return 0


def cmd_endpoint_invoke(args) -> int:
    from mlops_local.endpoint import lifecycle

    try:
        body = open(args.file, "rb").read() if args.file != "-" else sys.stdin.buffer.read()
    except OSError as err:
        raise UsageError(f"cannot read {args.file}: {err.strerror}") from None
    status, answer, inference_id = lifecycle.invoke(args.stage, body, args.content_type,
                                                    args.accept, args.inference_id)
    text = answer.decode("utf-8", "replace")
    if status >= 400:
        print_refusal(status, text)
        return 1
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    errors.print(f"inference id: {inference_id}")  # stdout carries the answer alone
    if args.ids_out:
        try:
            with open(args.ids_out, "a") as ids:  # one write: whole lines or nothing
                ids.write(f"{inference_id}\n" * _answered_rows(text))
        except OSError as err:
            raise UsageError(f"cannot write {args.ids_out}: {err.strerror}") from None
    return 0


def print_refusal(status: int, text: str) -> None:
    """The endpoint's error answer; for a refused batch, every refused row and why."""
    try:
        document = json.loads(text)
        message, problems = document["message"], document.get("problems") or []
    except (ValueError, KeyError, TypeError):
        message, problems = text, []
    console.print(f"[red]{status}[/red] ", end="")
    console.print(message, markup=False, highlight=False)
    if not problems:
        return
    console.print(f"refused rows ({len({p['row'] for p in problems})}; a request with one bad "
                  "row is refused whole):")
    for problem in problems:
        where = f" '{problem['feature']}'" if problem.get("feature") else ""
        value = f": {problem['value']!r}" if problem.get("value") is not None else ""
        console.print(f"  row {problem['row']}: {problem['reason']}{where}{value}",
                      markup=False, highlight=False)


def _answered_rows(text: str) -> int:
    """How many predictions an answer holds (CSV lines, or JSON's "predictions")."""
    try:
        return len(json.loads(text)["predictions"])
    except (ValueError, KeyError, TypeError):
        return sum(1 for line in text.splitlines() if line.strip())


def cmd_endpoint_test(args) -> int:
    options = {"rows": args.rows, "max_rmse": args.max_rmse, "p95_ms": args.p95_ms}
    if args.target == "aws":
        from model_deploy import gate

        package, result = gate.run_aws(project_config.load(), args.stage, **options)
    else:
        from mlops_local import deploy

        package, result = deploy.run_gate(project_config.load(), args.stage, **options)
    if args.output:
        args.output.write_text(json.dumps(result.as_dict(), indent=2))
    console.print(_table(
        f"endpoint test: {args.stage} serving version {package['ModelPackageVersion']}",
        ["check", "result", "detail"],
        [[c.name, "[green]pass[/green]" if c.passed else "[red]FAIL[/red]", c.detail]
         for c in result.checks]))
    if not result.passed:
        console.print("[red]endpoint test failed[/red]")
        return 1
    console.print("[green]endpoint test passed[/green]")
    return 0


def cmd_endpoint_status(args) -> int:
    from mlops_local.endpoint import lifecycle

    rows = []
    for stage in STAGES:
        try:
            record = lifecycle.status(stage)
        except ValueError as err:
            rows.append([stage, "stopped", "", str(err)])
            continue
        model = record["model_info"]
        rows.append([stage, "InService", record["url"],
                     f"{model.get('ModelPackageGroupName')}/{model.get('ModelPackageVersion')}"])
    console.print(_table("local endpoints", ["stage", "status", "url", "model / note"], rows))
    return 0


def cmd_endpoint_stop(args) -> int:
    from mlops_local.endpoint import lifecycle

    lifecycle.stop(args.stage)
    console.print(f"{args.stage} endpoint stopped")
    return 0


def cmd_monitor_run(args) -> int:
    from mlops_local import model_quality, monitor

    config = project_config.load()
    result = monitor.run_local(args.stage, args.start, args.end, cfg=config)
    console.print(monitor.format_table(result))
    quality, quality_report = model_quality.run_local(args.stage, args.start, args.end,
                                                      cfg=config)
    console.print(model_quality.format_table(quality, quality_report))
    reports = ([f"data quality {result.verdict}: {result.output_uri}/report.html"]
               if result.verdict in ("drift", "violations") else [])
    if quality.verdict == "violation":
        reports.append(f"model quality violation: {quality_report}")
    if reports and config.monitoring.retrain_on_violation:
        _retrain(config, args.stage, reports)  # its summary says how it went
    return 0 if result.verdict == "no drift" and quality.verdict != "violation" else 1


def cmd_monitor_history(args) -> int:
    from mlops_local import monitor

    runs = monitor.history(args.stage, cfg=project_config.load())
    console.print(monitor.format_history(args.stage, runs), markup=False, soft_wrap=True,
                  end="")
    return 0


def _retrain(config, stage: str, reports: list[str]) -> None:
    """Start the training pipeline on the newest data, as the cloud's alarm does; the new
    package's description names the reports that triggered it."""
    from mlops import local_pipeline
    from mlops_core import targets
    from mlops_local.store import LocalStore

    store = LocalStore()
    target = targets.local(config, store)
    local_pipeline.stage_data(config, target, store)  # the configured file, if it changed
    raw = target.raw_data_uri(config).rsplit("/", 1)[0] + "/"
    data = max(store.list(raw), key=lambda uri: store.path(uri).stat().st_mtime)
    description = f"retrained after monitoring {stage}: " + "; ".join(reports)
    console.print(f"[yellow]retraining on {data}[/yellow] ([monitoring] retrain_on_violation)")
    local_pipeline.run(config, {"InputDataUrl": data,
                                "ModelPackageDescription": description[:1024]}, console=console)


def cmd_monitor_ground_truth(args) -> int:
    from mlops_local import model_quality

    uri, records, labels, header = model_quality.write_ground_truth(args.stage, args.file)
    if header:
        console.print(f"line 1 read as the header: {','.join(header)}", markup=False)
    console.print(f"wrote {records} ground-truth records ({labels} labels) to {uri}")
    return 0


# batch ------------------------------------------------------------------------------------

def cmd_batch_run(args) -> int:
    from mlops_local import batch

    with console.status("scoring (the first run builds the batch definition)..."):
        result = batch.run(project_config.load(), args.input, args.output)
    for line in batch.summary(result):
        console.print(line, markup=False)
    return 0


def cmd_batch_diff(args) -> int:
    from model_deploy import build

    return _diff(args.profile, build.BATCH)


def cmd_batch_deploy(args) -> int:
    from mlops_core import targets
    from model_deploy import build, stacks

    config = project_config.load()
    session = stacks.require_credentials()
    extra = {"ScheduleExpression": args.schedule} if args.schedule else {}
    build.deploy_batch_stack(config, targets.aws(config, session.client("s3")),
                             sagemaker=session.client("sagemaker"),
                             cloudformation=session.client("cloudformation"),
                             echo=console.print, **extra)
    return 0


# infra ------------------------------------------------------------------------------------

def _stack_name(args, config) -> str:
    return args.stack_name or f"{config.project}-project"


def cmd_infra_deploy(args) -> int:
    from model_deploy import stacks

    config = project_config.load()
    if not args.repository:
        raise UsageError("give --repository OWNER/NAME (or set MLOPS_REPOSITORY)")
    parameters = stacks.project_parameters(
        config, repository=args.repository, connection_arn=args.connection_arn or "",
        branch=args.branch, source_type=args.source_type)
    stack = _stack_name(args, config)
    console.print(f"will create or update stack {stack} from {stacks.TEMPLATE.name} with:")
    for key, value in parameters.items():
        console.print(f"  {key} = {value}")
    session = stacks.require_credentials()
    stacks.deploy(stack, parameters, session.client("cloudformation"), echo=console.print)
    return 0


def cmd_infra_destroy(args) -> int:
    from model_deploy import stacks

    stack = _stack_name(args, project_config.load())
    console.print(f"will empty the buckets of stack {stack} and delete it")
    session = stacks.require_credentials()
    stacks.destroy(stack, session.client("cloudformation"), s3=session.client("s3"),
                  echo=console.print)
    return 0


def cmd_infra_outputs(args) -> int:
    from model_deploy import stacks

    session = stacks.require_credentials()
    outputs = stacks.stack_outputs(_stack_name(args, project_config.load()),
                                  session.client("cloudformation"))
    for key, value in outputs.items():
        console.print(f"{key} = {value}")
    return 0


# console ----------------------------------------------------------------------------------

def cmd_console(args) -> int:
    from mlops.console import server

    try:
        httpd = server.make_server(args.port)
    except OSError as err:
        raise UsageError(f"cannot listen on {server.HOST}:{args.port}: {err.strerror}; choose "
                         "another port with --port") from None
    console.print(f"console: http://{server.HOST}:{httpd.server_address[1]}/ (Ctrl-C stops "
                  "it; pipeline and monitoring runs it started go on)")
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


# parser -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    groups = parser.add_subparsers(dest="group", required=True)

    pipeline = groups.add_parser("pipeline", help="the training pipeline").add_subparsers(
        dest="command", required=True)
    p = pipeline.add_parser("definition", help="write build/pipeline-definition.json")
    _target_option(p)
    p.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    p.set_defaults(func=cmd_pipeline_definition)
    p = pipeline.add_parser("upsert", help="create or update the pipeline on SageMaker")
    p.add_argument("--target", choices=("aws",), default="aws")
    p.set_defaults(func=cmd_pipeline_upsert)
    p = pipeline.add_parser("run", help="run the pipeline (locally unless --target aws)")
    _target_option(p)
    p.add_argument("--wait", action="store_true", help="aws: follow the execution to its end")
    p.add_argument("--wait-minutes", type=float, default=WAIT_MINUTES,
                   help=f"aws: stop following after this long (default {WAIT_MINUTES})")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="override a pipeline parameter, e.g. -p MetricThreshold=2.5")
    p.add_argument("--definition", type=Path, metavar="FILE",
                   help="run this SageMaker pipeline definition JSON instead of the project's")
    p.add_argument("--profile", choices=TARGETS,
                   help="aws: rehearse the definition CodeBuild builds (tuning and all) here, "
                        "with this machine's bucket, role and region")
    p.set_defaults(func=cmd_pipeline_run)
    p = pipeline.add_parser("diff", help="how the local and aws definitions differ, member by "
                            "member (exit 1 when something differs that names do not explain)")
    _diff_profile(p)
    p.set_defaults(func=cmd_pipeline_diff)
    p = pipeline.add_parser("executions", help="list local executions, newest first")
    p.set_defaults(func=cmd_pipeline_executions)
    p = pipeline.add_parser("steps", help="list the steps of a local execution")
    p.add_argument("execution", help="execution id (see `mlops pipeline executions`)")
    p.set_defaults(func=cmd_pipeline_steps)
    p = pipeline.add_parser("stop", help="stop a running local execution")
    p.add_argument("execution", help="execution id (see `mlops pipeline executions`)")
    p.set_defaults(func=cmd_pipeline_stop)

    registry = groups.add_parser("registry", help="the local model registry").add_subparsers(
        dest="command", required=True)
    p = registry.add_parser("list", help="model packages, newest first")
    p.set_defaults(func=cmd_registry_list)
    for name, func in (("approve", cmd_registry_approve), ("reject", cmd_registry_reject)):
        p = registry.add_parser(name, help=f"{name} a model package version")
        p.add_argument("version", help="model package version number (ASCII digits)")
        p.add_argument("--note", help="approval description")
        p.set_defaults(func=func)

    p = groups.add_parser("deploy", help="deploy the newest approved model to a local endpoint")
    p.add_argument("stage", choices=STAGES)
    p.set_defaults(func=cmd_deploy)

    endpoint = groups.add_parser("endpoint", help="local endpoints").add_subparsers(
        dest="command", required=True)
    p = endpoint.add_parser("invoke", help="send rows to a stage's endpoint")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--file", required=True, help="request body file (CSV rows without header), "
                   "or - for standard input")
    p.add_argument("--content-type", default="text/csv", help="text/csv or application/json")
    p.add_argument("--accept", default="text/csv")
    p.add_argument("--inference-id", help="the request's X-Amzn-SageMaker-Inference-Id "
                   "(default: the endpoint makes one up); printed on standard error")
    p.add_argument("--ids-out", type=Path, metavar="FILE", help="append the inference id to "
                   "FILE once per answered row, for `mlops monitor ground-truth`")
    p.set_defaults(func=cmd_endpoint_invoke)
    p = endpoint.add_parser("test", help="the staging gate: score the endpoint on held-out rows")
    p.add_argument("stage", choices=STAGES)
    _target_option(p)
    p.add_argument("--rows", type=int, default=1000, help="held-out rows to send")
    p.add_argument("--max-rmse", type=float,
                   help="absolute RMSE cap (default: 1.15 x the model's evaluation RMSE)")
    p.add_argument("--p95-ms", type=float, default=200.0, help="p95 one-row latency bound")
    p.add_argument("--output", type=Path, help="also write the result as JSON here")
    p.set_defaults(func=cmd_endpoint_test)
    p = endpoint.add_parser("status", help="which local endpoints run")
    p.set_defaults(func=cmd_endpoint_status)
    p = endpoint.add_parser("stop", help="stop a stage's local endpoint")
    p.add_argument("stage", choices=STAGES)
    p.set_defaults(func=cmd_endpoint_stop)

    monitor = groups.add_parser("monitor", help="data and model quality of captured traffic"
                                ).add_subparsers(dest="command", required=True)
    p = monitor.add_parser("run", help="check a stage's captured traffic against its baseline")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--start", help="window start, ISO 8601 (default: all captured traffic)")
    p.add_argument("--end", help="window end, ISO 8601, exclusive")
    p.set_defaults(func=cmd_monitor_run)
    p = monitor.add_parser("ground-truth", help="store labels of served requests for the "
                           "model-quality check")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--file", required=True, type=Path, help="CSV of inference id,label (header "
                   "optional); a request of n rows has n lines, in row order")
    p.set_defaults(func=cmd_monitor_ground_truth)
    p = monitor.add_parser("history", help="a stage's earlier monitoring runs, newest first, "
                           "with their reports")
    p.add_argument("stage", choices=STAGES)
    p.set_defaults(func=cmd_monitor_history)

    batch = groups.add_parser("batch", help="batch scoring with the newest approved model"
                              ).add_subparsers(dest="command", required=True)
    p = batch.add_parser("run", help="score a CSV file (rows without header) locally")
    p.add_argument("--input", required=True, help="CSV rows without header, features in order")
    p.add_argument("--output", help="joined output (default build/batch/<input name>.out); "
                   "refused rows go beside it in <output>.errors.jsonl")
    p.set_defaults(func=cmd_batch_run)
    p = batch.add_parser("deploy", help="aws: the scheduled batch pipeline stack, scoring with "
                         "the newest approved model")
    p.add_argument("--schedule", help="EventBridge Scheduler expression, e.g. cron(0 3 * * ? *)")
    p.set_defaults(func=cmd_batch_deploy)
    p = batch.add_parser("diff", help="how the local batch definition differs from the one the "
                         "deploy pipeline schedules, member by member")
    _diff_profile(p)
    p.set_defaults(func=cmd_batch_diff)

    p = groups.add_parser("console", help="the local web console: review, approve, deploy, "
                          "promote and monitor in a browser (127.0.0.1 only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)")
    p.set_defaults(func=cmd_console)

    infra = groups.add_parser("infra", help="the project's CI/CD stack in your AWS account"
                              ).add_subparsers(dest="command", required=True)
    p = infra.add_parser("deploy", help="create or update the project stack")
    p.add_argument("--repository", default=os.environ.get("MLOPS_REPOSITORY"),
                   help="OWNER/NAME of the source repository (env MLOPS_REPOSITORY)")
    p.add_argument("--connection-arn", default=os.environ.get("MLOPS_CONNECTION_ARN"),
                   help="CodeConnections connection ARN (env MLOPS_CONNECTION_ARN)")
    p.add_argument("--branch", default=os.environ.get("MLOPS_BRANCH", "main"))
    p.add_argument("--source-type", default="CodeConnections",
                   choices=("CodeConnections", "CodeCommit"))
    p.add_argument("--stack-name", help="default: <project>-project")
    p.set_defaults(func=cmd_infra_deploy)
    for name, func, text in (("destroy", cmd_infra_destroy, "empty the buckets, delete the stack"),
                             ("outputs", cmd_infra_outputs, "print the stack's outputs")):
        p = infra.add_parser(name, help=text)
        p.add_argument("--stack-name", help="default: <project>-project")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command line; its exit code. With no `argv` this is the program (`mlops` or
    `python -m mlops.cli`): it parses sys.argv and ends the process."""
    if argv is None:
        _exit(_main(None))
    return _main(argv)


def _exit(code: int) -> None:
    """End the process without the interpreter's teardown, which spent 1-2 s freeing the SDK's,
    pandas' and scikit-learn's objects module by module after a pipeline run. What the
    interpreter does before that still happens, in its order: threads are joined (as
    threading's own shutdown does), the exit handlers run (logging, multiprocessing's,
    coverage's), and the output is flushed."""
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    # The sagemaker SDK sets the root logger to INFO; botocore's credential and endpoint
    # notes are noise in a build log.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # AWS refusals (access denied, throttling, a missing resource) are user-facing too.
    except (ValueError, FileNotFoundError, BotoCoreError, ClientError) as err:
        if os.environ.get("MLOPS_DEBUG"):
            raise
        errors.print(f"[red]error:[/red] {escape(str(err))}")
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


if __name__ == "__main__":
    main()
