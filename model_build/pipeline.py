"""The training pipeline: one `get_pipeline` factory, the single source of truth.

SageMaker Pipelines runs the definition this produces in the cloud; `mlops_local.engine` runs
the very same JSON locally. Building it needs no credentials and no network: the bucket
and role are passed in, telemetry is opted out, and every file the SDK would upload goes
through the target's uploader, which addresses it by content so the same code gives the same JSON.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import tempfile
from pathlib import Path

from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
from sagemaker.core.processing import ProcessingInput, ProcessingOutput, ScriptProcessor
from sagemaker.core.shapes import (
    DriftCheckBaselines,
    DriftCheckModelDataQuality,
    MetricDefinition,
    MetricsSource,
    ModelDataQuality,
    ModelMetrics,
    ModelQuality,
)
from sagemaker.core.training.configs import (
    Compute,
    InputData,
    OutputDataConfig,
    SourceCode,
)
from sagemaker.core.workflow.conditions import ConditionLessThanOrEqualTo
from sagemaker.core.workflow.execution_variables import ExecutionVariables
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.parameters import (
    Parameter,
    ParameterFloat,
    ParameterInteger,
    ParameterString,
)
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.condition_step import ConditionStep
from sagemaker.mlops.workflow.fail_step import FailStep
from sagemaker.mlops.workflow.model_step import ModelStep
from sagemaker.mlops.workflow.pipeline import Pipeline
from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep, TrainingStep, TuningStep
from sagemaker.serve.model_builder import ModelBuilder
from sagemaker.train import ModelTrainer
from sagemaker.train.tuner import HyperparameterTuner

from mlops_core.config import CONFIG_FILE, TUNING_OBJECTIVES, Config, ConfigError, Tuning
from mlops_core.targets import Target
from model_build.images import sklearn_image
from model_build.sessions import ContentAddressedSession, OfflineModelTrainer

SCRIPTS = Path(__file__).resolve().parent / "scripts"
PROCESSING = "/opt/ml/processing"
CONTRACT_DIR = f"{PROCESSING}/input/contract"
METRIC_REGEX = r"validation_rmse=([0-9.eE+-]+)"
# What train.py logs, as "validation:rmse" etc.: the tuning objective is one of them.
METRIC_DEFINITIONS = [
    {"Name": name, "Regex": METRIC_REGEX.replace("rmse", name.split(":")[1])}
    for name in TUNING_OBJECTIVES
]


def _upload_script(session: ContentAddressedSession, name: str) -> str:
    return session.upload_data(SCRIPTS / name)


def _upload_schema(session: ContentAddressedSession, config: Config) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        schema = Path(tmp) / "schema.json"
        schema.write_text(json.dumps(config.schema(), indent=2, sort_keys=True))
        return session.upload_data(schema)


def get_pipeline(config: Config, target: Target) -> Pipeline:
    """Build the training pipeline of `target`'s profile for `config`, its code uploaded to
    `target`'s store."""
    project, region, bucket, role = config.project, target.region, target.bucket, target.role

    def artifacts(*parts: str) -> Join:
        """A per-execution output location, so a cached step's outputs are never overwritten."""
        return Join(
            on="/",
            values=[
                f"s3://{bucket}/{project}/executions",
                ExecutionVariables.PIPELINE_EXECUTION_ID,
                *parts,
            ],
        )

    session = ContentAddressedSession(target=target, prefix=f"{project}/code")
    cache = CacheConfig(enable_caching=True, expire_after="P30D")
    image = sklearn_image(config, region)

    input_data = ParameterString("InputDataUrl", default_value=target.raw_data_uri(config))
    processing_type = ParameterString(
        "ProcessingInstanceType",
        default_value=config.aws.get("processing_instance_type", "ml.m5.large"),
    )
    processing_count = ParameterInteger("ProcessingInstanceCount", default_value=1)
    training_type = ParameterString(
        "TrainingInstanceType",
        default_value=config.aws.get("training_instance_type", "ml.m5.large"),
    )
    threshold = ParameterFloat("MetricThreshold", default_value=config.threshold)
    approval = ParameterString("ModelApprovalStatus", default_value="PendingManualApproval")
    # Why this version was trained: a retraining run names the monitoring report behind it.
    description = ParameterString("ModelPackageDescription",
                                  default_value=f"{project} training pipeline")
    # The profile, not the target, decides the steps: a rehearsal builds the aws ones here.
    tunes = config.tunes(target.profile)
    hyperparameters = _hyperparameters(config, tuned=tunes)

    schema_uri = _upload_schema(session, config)
    # The data contract every job script imports, shipped as an input on PYTHONPATH.
    contract_input = _input("contract", _upload_script(session, "contract.py"), CONTRACT_DIR)

    def processor(job: str) -> ScriptProcessor:
        return ScriptProcessor(
            role=role,
            image_uri=image,
            command=["python3"],
            instance_type=processing_type,
            instance_count=processing_count,
            base_job_name=f"{project}-{job}",
            env={"PYTHONPATH": CONTRACT_DIR},
            sagemaker_session=session,
        )

    schema_input = _input("schema", schema_uri, f"{PROCESSING}/input/schema")
    preprocess = ProcessingStep(
        name="ValidateAndPreprocess",
        step_args=processor("preprocess").run(
            code=_upload_script(session, "preprocess.py"),
            inputs=[
                _input("raw", input_data, f"{PROCESSING}/input/data"),
                schema_input,
                contract_input,
            ],
            outputs=[
                _output(name, f"{PROCESSING}/{name}", artifacts("preprocess", name))
                for name in ("train", "validation", "test", "report")
            ],
        ),
        cache_config=cache,
    )
    train_uri = _output_uri(preprocess, "train")

    baseline = ProcessingStep(
        name="DataQualityBaseline",
        step_args=processor("baseline").run(
            code=_upload_script(session, "baseline.py"),
            inputs=[_input("train", train_uri, f"{PROCESSING}/input/train"), schema_input,
                    contract_input],
            outputs=[_output("baseline", f"{PROCESSING}/baseline", artifacts("baseline"))],
        ),
        cache_config=cache,
    )

    # A cached Tune step hands on the models of the execution that ran it, so its trials
    # (named uniquely per tuning job) must not be written under a per-execution prefix.
    tuning_models = f"{project}/tuning/models"
    models_uri = f"s3://{bucket}/{tuning_models}" if tunes else artifacts("models")
    trainer = OfflineModelTrainer(
        training_image=image,
        role=role,
        base_job_name=f"{project}-train",
        source_code=SourceCode(
            # The tuning API has no entrypoint, so its jobs fetch the code as one archive.
            source_dir=_upload_source_archive(session) if tunes else str(SCRIPTS),
            entry_script="train.py",
        ),
        compute=Compute(instance_type=training_type, instance_count=1),
        # HyperParameters are strings only: a typed parameter is passed as its Std:Join.
        hyperparameters={name: value.to_string() if isinstance(value, Parameter) else value
                         for name, value in hyperparameters.items()},
        output_data_config=OutputDataConfig(s3_output_path=models_uri),
        sagemaker_session=session,
    )
    training_inputs = [
        InputData(channel_name="train", data_source=train_uri),
        InputData(channel_name="validation", data_source=_output_uri(preprocess, "validation")),
        InputData(channel_name="schema", data_source=schema_uri),
    ]
    if tunes:
        training = TuningStep(
            name="Tune",
            step_args=_tuner(trainer, config).tune(inputs=training_inputs),
            cache_config=cache,
        )
        # Each tuning job's model lands at <S3OutputPath>/<training job name>/output/.
        model_data = training.get_top_model_s3_uri(top_k=0, s3_bucket=bucket,
                                                   prefix=tuning_models)
    else:
        trainer = trainer.with_metric_definitions(
            [MetricDefinition(name=d["Name"], regex=d["Regex"]) for d in METRIC_DEFINITIONS]
        )
        training = TrainingStep(
            name="Train",
            step_args=trainer.train(input_data_config=training_inputs),
            cache_config=cache,
        )
        model_data = training.properties.ModelArtifacts.S3ModelArtifacts

    evaluation_report = PropertyFile(
        name="EvaluationReport", output_name="evaluation", path="evaluation.json"
    )
    evaluate = ProcessingStep(
        name="Evaluate",
        step_args=processor("evaluate").run(
            code=_upload_script(session, "evaluate.py"),
            inputs=[
                _input("model", model_data, f"{PROCESSING}/model"),
                _input("test", _output_uri(preprocess, "test"), f"{PROCESSING}/test"),
                contract_input,
            ],
            outputs=[_output("evaluation", f"{PROCESSING}/evaluation", artifacts("evaluation"))],
        ),
        property_files=[evaluation_report],
        cache_config=cache,
    )
    evaluation_uri = Join(on="/", values=[_output_uri(evaluate, "evaluation"), "evaluation.json"])
    baseline_uri = _output_uri(baseline, "baseline")

    builder = ModelBuilder(
        s3_model_data_url=model_data,
        image_uri=image,
        role_arn=role,
        sagemaker_session=session,
        env_vars={
            "SAGEMAKER_PROGRAM": "inference.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        },
        dependencies={},
    )
    register = ModelStep(
        name="RegisterModel",
        step_args=builder.register(
            model_package_group_name=config.model_package_group,
            content_types=["text/csv", "application/json"],
            response_types=["text/csv", "application/json"],
            inference_instances=["ml.m5.large", "ml.c5.large"],
            transform_instances=["ml.m5.large"],
            approval_status=approval,
            description=description,
            model_metrics=ModelMetrics(
                model_quality=ModelQuality(
                    statistics=MetricsSource(content_type="application/json", s3_uri=evaluation_uri)
                ),
                model_data_quality=ModelDataQuality(
                    statistics=_metrics_source(baseline_uri, "statistics.json"),
                    constraints=_metrics_source(baseline_uri, "constraints.json"),
                ),
            ),
            # The staging gate scores the endpoint on the rows this model was tested on.
            customer_metadata_properties={
                "TestDataUri": Join(on="/", values=[_output_uri(preprocess, "test"), "test.csv"]),
            },
            drift_check_baselines=DriftCheckBaselines(
                model_data_quality=DriftCheckModelDataQuality(
                    statistics=_metrics_source(baseline_uri, "statistics.json"),
                    constraints=_metrics_source(baseline_uri, "constraints.json"),
                )
            ),
        ),
    )

    metric = JsonGet(
        step_name=evaluate.name,
        property_file=evaluation_report,
        json_path=f"regression_metrics.{config.metric}.value",
    )
    fail = FailStep(
        name="MetricAboveThreshold",
        error_message=Join(
            on=" ",
            values=[
                f"Test {config.metric}",
                metric,
                "is above the threshold",
                threshold,
                "- the model was not registered.",
            ],
        ),
    )
    check = ConditionStep(
        name="CheckMetric",
        conditions=[ConditionLessThanOrEqualTo(left=metric, right=threshold)],
        if_steps=[register],
        else_steps=[fail],
    )

    return Pipeline(
        name=config.pipeline_name,
        parameters=[
            input_data,
            processing_type,
            processing_count,
            training_type,
            threshold,
            approval,
            description,
            *(value for value in hyperparameters.values() if isinstance(value, Parameter)),
        ],
        steps=[preprocess, baseline, training, evaluate, check],
        sagemaker_session=session,
    )


_PARAMETER_TYPES = {str: ParameterString, int: ParameterInteger, float: ParameterFloat}
_RANGE_TYPES = {"integer": IntegerParameter, "continuous": ContinuousParameter}


def _hyperparameters(config: Config, tuned: bool) -> dict:
    """What train.py gets; each setting a user may change per run is a pipeline parameter
    (the tuned ones are the tuning job's to choose)."""
    if config.selection == "compare":
        return {
            "candidates": ParameterString(
                "Candidates", default_value=json.dumps(config.candidates)
            ),
            "selection_metric": config.metric,
        }
    ranges = {r.name for r in config.tuning.ranges} if tuned else set()
    return {
        name: _PARAMETER_TYPES[type(value)](_parameter_name(name), default_value=value)
        for name, value in config.hyperparameters.items()
        if name not in ranges
    }


def _tuner(trainer: ModelTrainer, config: Config) -> HyperparameterTuner:
    tuning = config.tuning
    _check_ranges(config.hyperparameters, tuning)
    return HyperparameterTuner(
        model_trainer=trainer,
        objective_metric_name=tuning.objective,
        objective_type=tuning.objective_type,
        metric_definitions=METRIC_DEFINITIONS,
        hyperparameter_ranges={
            r.name: CategoricalParameter(list(r.values)) if r.type == "categorical"
            else _RANGE_TYPES[r.type](r.min, r.max, scaling_type=r.scaling)
            for r in tuning.ranges
        },
        strategy=tuning.strategy,
        max_jobs=tuning.max_jobs,
        max_parallel_jobs=tuning.max_parallel_jobs,
        random_seed=tuning.seed,
        base_tuning_job_name=f"{config.project}-tune",
    )


def _check_ranges(hyperparameters: dict, tuning: Tuning) -> None:
    """Refuse ranges train.py would refuse, before a tuning job spends its training jobs."""
    from model_build.scripts.train import TrainError, parse_hyperparameters

    settings = dict(hyperparameters)
    for r in tuning.ranges:
        settings[r.name] = r.values[0] if r.type == "categorical" else r.min
    try:
        parse_hyperparameters([f"--{name}={value}" for name, value in settings.items()])
    except TrainError as err:
        raise ConfigError(
            f"{CONFIG_FILE.name}: [tuning.ranges] do not fit [model.hyperparameters]: {err}"
        ) from None


def _upload_source_archive(session: ContentAddressedSession) -> str:
    """The job scripts as sourcedir.tar.gz with fixed times and owners, so the same code
    gives the same bytes (and the same content-addressed URI)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "sourcedir.tar.gz"
        with (
            open(archive, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for file in sorted(SCRIPTS.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    info = tarfile.TarInfo(file.relative_to(SCRIPTS).as_posix())
                    info.size, info.mode = file.stat().st_size, 0o644
                    with open(file, "rb") as content:
                        tar.addfile(info, content)
        return session.upload_data(archive)


def _parameter_name(hyperparameter: str) -> str:
    """`learning_rate` -> `LearningRate`, `C` -> `C`: pipeline parameters are PascalCase."""
    return "".join(part[:1].upper() + part[1:] for part in hyperparameter.split("_"))


def _input(name, source, destination) -> ProcessingInput:
    return ProcessingInput(
        input_name=name,
        s3_input={
            "s3_uri": source,
            "local_path": destination,
            "s3_data_type": "S3Prefix",
            "s3_input_mode": "File",
        },
    )


def _output(name, source, destination) -> ProcessingOutput:
    return ProcessingOutput(
        output_name=name,
        s3_output={"s3_uri": destination, "local_path": source, "s3_upload_mode": "EndOfJob"},
    )


def _output_uri(step: ProcessingStep, name: str):
    return step.properties.ProcessingOutputConfig.Outputs[name].S3Output.S3Uri


def _metrics_source(prefix, filename: str) -> MetricsSource:
    return MetricsSource(
        content_type="application/json", s3_uri=Join(on="/", values=[prefix, filename])
    )
