"""Training jobs under the contract of the SDK's ModelTrainer drivers (`sm_train.sh`).

The drivers hard-code /opt/ml and are shell scripts, so they are not run; their contract
is reproduced instead: channels under input/data, config JSON files, the SM_* environment,
`python <entry_script> --<hyperparameter> <value> ...` from the code channel, the model
directory packed to model.tar.gz, the failure file as the failure reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from mlops_local.engine.errors import StepFailure
from mlops_local.engine.job import Job
from mlops_local.store import StoreError

HOST = "algo-1"
DRIVERS_ENTRYPOINT = "/opt/ml/input/data/sm_drivers/sm_train.sh"


def _deserialize(value):
    """The drivers' safe_deserialize: JSON when it parses, else the string itself."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _serialize(value) -> str:
    """The drivers' safe_serialize: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _channels(arguments: dict, job: Job) -> dict[str, dict]:
    channels = {}
    for channel in arguments.get("InputDataConfig", []) or []:
        name = channel["ChannelName"]
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if not source:
            raise StepFailure(f"channel {name}: only S3DataSource channels run locally")
        try:
            job.store.download(source["S3Uri"], job.opt_ml / "input" / "data" / name)
        except StoreError as err:
            raise StepFailure(f"channel {name}: {err}") from None
        channels[name] = {
            "TrainingInputMode": channel.get("InputMode", "File"),
            "S3DistributionType": source.get("S3DataDistributionType", "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
        }
    return channels


def _write_config(job: Job, name: str, content: dict) -> None:
    path = job.opt_ml / "input" / "config" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def _environment(arguments: dict, job: Job, channels: dict, source: dict) -> dict:
    """The SM_* variables the drivers' environment.py sets, with /opt/ml mapped to the job."""
    hyperparameters = {
        key: _deserialize(value)
        for key, value in (arguments.get("HyperParameters") or {}).items()
    }
    instance_type = (arguments.get("ResourceConfig") or {}).get("InstanceType", "local")
    channel_dirs = {name: job.map(f"/opt/ml/input/data/{name}") for name in channels}
    env = {
        "SM_MODEL_DIR": job.map("/opt/ml/model"),
        "SM_INPUT_DIR": job.map("/opt/ml/input"),
        "SM_INPUT_DATA_DIR": job.map("/opt/ml/input/data"),
        "SM_INPUT_CONFIG_DIR": job.map("/opt/ml/input/config"),
        "SM_OUTPUT_DIR": job.map("/opt/ml/output"),
        "SM_OUTPUT_FAILURE": job.map("/opt/ml/output/failure"),
        "SM_OUTPUT_DATA_DIR": job.map("/opt/ml/output/data"),
        "SM_MASTER_ADDR": HOST,
        "SM_MASTER_PORT": 7777,
        "SM_CHANNELS": list(channels),
        "SM_HPS": hyperparameters,
        "SM_CURRENT_HOST": HOST,
        "SM_CURRENT_INSTANCE_TYPE": instance_type,
        "SM_HOSTS": [HOST],
        "SM_HOST_COUNT": 1,
        "SM_CURRENT_HOST_RANK": 0,
        "SM_NUM_CPUS": os.cpu_count() or 1,
        "SM_NUM_GPUS": 0,
        "SM_NUM_NEURONS": 0,
        "TRAINING_JOB_NAME": job.name,
    }
    for name, directory in channel_dirs.items():
        env[f"SM_CHANNEL_{name.upper()}"] = directory
    for key, value in hyperparameters.items():
        env[f"SM_HP_{key.replace('-', '_').upper()}"] = value
    if source:
        env["SM_SOURCE_DIR"] = job.map("/opt/ml/input/data/code")
        env["SM_ENTRY_SCRIPT"] = source.get("entry_script") or ""
    env["SM_TRAINING_ENV"] = {
        "channel_input_dirs": channel_dirs,
        "current_host": HOST,
        "current_instance_type": instance_type,
        "hosts": [HOST],
        "hyperparameters": hyperparameters,
        "input_data_config": channels,
        "input_config_dir": env["SM_INPUT_CONFIG_DIR"],
        "input_data_dir": env["SM_INPUT_DATA_DIR"],
        "input_dir": env["SM_INPUT_DIR"],
        "job_name": job.name,
        "model_dir": env["SM_MODEL_DIR"],
        "num_cpus": env["SM_NUM_CPUS"],
        "num_gpus": 0,
        "output_data_dir": env["SM_OUTPUT_DATA_DIR"],
    }
    user = {k: job.map(v) for k, v in (arguments.get("Environment") or {}).items()}
    return {**user, **{k: _serialize(v) for k, v in env.items()}}


def _script(entry: str, cli: list[str]) -> list[str]:
    if entry.endswith(".py"):
        return [sys.executable, entry, *cli]
    if entry.endswith(".sh"):
        return ["/bin/sh", entry, *cli]
    raise StepFailure(f"entry script {entry!r} is neither a .py nor a .sh file")


def _framework_command(hyperparameters: dict, job: Job) -> tuple[list[str], Path]:
    """What a framework image's training toolkit runs when the job names no entrypoint (the
    tuning API has none): sagemaker_submit_directory unpacked in /opt/ml/code, then
    sagemaker_program with the other hyperparameters as `sagemaker_training.mapping.
    to_cmd_args` writes them: sorted, `-x` for a one-letter name, `--name` otherwise."""
    code = job.opt_ml / "code"
    submit = _deserialize(hyperparameters.get("sagemaker_submit_directory") or "")
    if submit:
        try:
            job.store.download(submit, code)
        except StoreError as err:
            raise StepFailure(f"sagemaker_submit_directory: {err}") from None
        for archive in code.glob("*.tar.gz"):
            with tarfile.open(archive) as tar:
                tar.extractall(code, filter="data")
    cli = []
    for key in sorted(k for k in hyperparameters if not k.startswith("sagemaker_")):
        cli += [f"--{key}" if len(key) > 1 else f"-{key}", str(_deserialize(hyperparameters[key]))]
    return _script(str(_deserialize(hyperparameters["sagemaker_program"])), cli), code


def _command(arguments: dict, job: Job, source: dict) -> tuple[list[str], Path]:
    """What sm_train.sh (or, without an entrypoint, the image's toolkit) would run, and where."""
    code = job.opt_ml / "input" / "data" / "code"
    spec = arguments.get("AlgorithmSpecification") or {}
    hyperparameters = arguments.get("HyperParameters") or {}
    if not spec.get("ContainerEntrypoint") and "sagemaker_program" in hyperparameters:
        return _framework_command(hyperparameters, job)
    if not source:
        entrypoint = list(spec.get("ContainerEntrypoint") or [])
        if not entrypoint or DRIVERS_ENTRYPOINT in entrypoint:
            raise StepFailure(
                "the training job has no source code (sm_drivers/sourcecode.json) and no "
                f"entrypoint to run locally; the image {spec.get('TrainingImage', '?')} is not run"
            )
        command = entrypoint + list(spec.get("ContainerArguments") or [])
        return job.python_command(command), job.opt_ml
    source_dir = source.get("source_dir") or ""
    if source_dir.endswith(".tar.gz"):
        with tarfile.open(code / Path(source_dir).name) as archive:
            archive.extractall(code, filter="data")
    workdir = code if source_dir else job.opt_ml
    if source.get("command"):
        command = shlex.split(source["command"]) + [str(a) for a in source.get("args") or []]
        return job.python_command(command), workdir
    cli = []
    for key, value in hyperparameters.items():
        cli += [f"--{key}", _serialize(_deserialize(value))]
    return _script(source.get("entry_script") or "", cli), workdir


def _pack(directory: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def _metrics(log: Path, definitions: list[dict]) -> list[dict]:
    text = log.read_text(errors="replace") if log.exists() else ""
    now = datetime.now(UTC).isoformat()
    metrics = []
    for definition in definitions or []:
        found = re.findall(definition["Regex"], text)
        if found:
            value = found[-1][0] if isinstance(found[-1], tuple) else found[-1]
            try:
                metrics.append({"MetricName": definition["Name"], "Value": float(value),
                                "Timestamp": now})
            except ValueError:
                continue
    return metrics


def run_training(arguments: dict, job: Job) -> dict:
    """Run a resolved CreateTrainingJob request; its DescribeTrainingJob-shaped properties."""
    channels = _channels(arguments, job)
    drivers = job.opt_ml / "input" / "data" / "sm_drivers" / "sourcecode.json"
    source = json.loads(drivers.read_text()) if drivers.is_file() else {}
    _write_config(job, "hyperparameters.json", arguments.get("HyperParameters") or {})
    _write_config(job, "inputdataconfig.json", channels)
    _write_config(job, "resourceconfig.json", {
        "current_host": HOST, "hosts": [HOST], "network_interface_name": "eth0",
        "current_instance_type": (arguments.get("ResourceConfig") or {}).get("InstanceType", ""),
    })
    for directory in ("model", "output/data"):
        (job.opt_ml / directory).mkdir(parents=True, exist_ok=True)
    command, workdir = _command(arguments, job, source)
    exit_code = job.run(command, _environment(arguments, job, channels, source), cwd=workdir)
    if exit_code != 0:
        raise StepFailure(job.failure_reason(exit_code, job.opt_ml / "output" / "failure"))
    output_path = (arguments.get("OutputDataConfig") or {}).get("S3OutputPath", "").rstrip("/")
    if not output_path:
        raise StepFailure("OutputDataConfig.S3OutputPath is required")
    model_uri = f"{output_path}/{job.name}/output/model.tar.gz"
    job.store.put_file(_pack(job.opt_ml / "model", job.root / "model.tar.gz"), model_uri)
    output_data = job.opt_ml / "output" / "data"
    if any(output_data.iterdir()):
        archive = _pack(output_data, job.root / "output.tar.gz")
        job.store.put_file(archive, f"{output_path}/{job.name}/output/output.tar.gz")
    spec = arguments.get("AlgorithmSpecification") or {}
    return {
        **arguments,
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn("training-job"),
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "ModelArtifacts": {"S3ModelArtifacts": model_uri},
        "FinalMetricDataList": _metrics(job.log, spec.get("MetricDefinitions")),
    }
