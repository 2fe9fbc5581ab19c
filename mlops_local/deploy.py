"""The local target of the deploy half: the same build step, a local endpoint per stage, the gate.

`deploy(stage)` runs `model_deploy.build` against the local registry (newest Approved
package, stage configurations), unpacks that package's model and starts (or replaces) the
stage's endpoint. `run_gate` runs the staging gate against it and records its result; production
only takes the package that passed the staging gate.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mlops_core import targets
from mlops_core.config import Config, state_dir
from mlops_core.files import write_atomic
from mlops_core.names import STAGES, capture_uri
from mlops_local.endpoint import lifecycle
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore
from model_deploy import build, gate


class DeployError(ValueError):
    """A deployment that must not happen; nothing was changed."""


def _gate_file(stage: str, last: bool = False) -> Path:
    return state_dir() / "gates" / (f"{stage}.last.json" if last else f"{stage}.json")


def record_gate(stage: str, package: dict, checks: list[dict], passed: bool = True) -> Path:
    """Remember the endpoint test's result on `stage`; a pass is what promotion needs."""
    at = datetime.now(UTC).isoformat()
    document = {"ModelPackageArn": package["ModelPackageArn"],
                "ModelPackageVersion": package["ModelPackageVersion"], "Checks": checks}
    write_atomic(_gate_file(stage, last=True),
                 json.dumps({**document, "Passed": passed, "At": at}, indent=2))
    if passed:
        write_atomic(_gate_file(stage), json.dumps({**document, "PassedAt": at}, indent=2))
    return _gate_file(stage, last=not passed)


def _read_gate(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def passed_gate(stage: str) -> dict | None:
    """The stage's last passed endpoint test, or None."""
    return _read_gate(_gate_file(stage))


def last_gate(stage: str) -> dict | None:
    """The stage's last endpoint test, passed or not (`Passed`), or None."""
    return _read_gate(_gate_file(stage, last=True))


def unpack_model(package: dict, store: LocalStore) -> Path:
    """The package's model.tar.gz unpacked once under the state directory."""
    model_data = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    group, version = package["ModelPackageGroupName"], package["ModelPackageVersion"]
    destination = state_dir() / "models" / group / str(version)
    if (destination / "model.joblib").is_file():
        return destination
    archive = store.path(model_data)
    if not archive.is_file():
        raise DeployError(f"model artifact of {group}/{version} is missing: {model_data}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f"{version}.partial-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        shutil.rmtree(destination, ignore_errors=True)
        partial.rename(destination)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return destination


def deploy(config: Config, stage: str, registry: LocalRegistry | None = None) -> dict:
    """Deploy the newest approved package to `stage`; the endpoint's record."""
    if stage not in STAGES:
        raise DeployError(f"unknown stage {stage!r}; use one of {STAGES}")
    registry = registry or LocalRegistry()
    store = LocalStore()
    target = targets.local(config, store)
    names = build.project_names(config, target)
    package, templates_out, documents = build.render(registry, config.model_package_group, names)
    stage_parameters = documents[f"{stage}-config.json"]
    if stage == "prod":
        _check_staging_passed(package)
    build.publish(templates_out, documents, build.BUILD_DIR)
    version = package["ModelPackageVersion"]
    model_dir = unpack_model(package, store)
    return lifecycle.start(
        stage,
        model_dir,
        capture_uri=capture_uri(target.bucket, config.project, stage, version),
        sampling=float(stage_parameters["Parameters"].get("SamplingPercentage", 100)),
        model_info={key: package[key] for key in (
            "ModelPackageGroupName", "ModelPackageVersion", "ModelPackageArn")},
        endpoint_name=config.endpoint_name(stage),
    )


def _check_staging_passed(package: dict) -> None:
    gate = passed_gate("staging")
    name = f"{package['ModelPackageGroupName']}/{package['ModelPackageVersion']}"
    if not gate or gate["ModelPackageArn"] != package["ModelPackageArn"]:
        tested = f" (the last package that passed is version {gate['ModelPackageVersion']})" \
            if gate else ""
        raise DeployError(
            f"{name} has not passed the staging endpoint test{tested}: run "
            "`mlops deploy staging` and `mlops endpoint test staging` first"
        )


def run_gate(config: Config, stage: str, **options) -> tuple[dict, gate.GateResult]:
    """The staging gate against the stage's local endpoint; its result is recorded, and a pass
    is what `deploy(config, "prod")` asks for."""
    endpoint = lifecycle.status(stage)
    package = LocalRegistry().describe_model_package(
        ModelPackageName=endpoint["model_info"]["ModelPackageArn"])
    store = LocalStore()

    def read(uri: str) -> bytes:
        path = store.path(uri)
        if not path.is_file():
            raise gate.GateError(f"nothing in the local store at {uri}")
        return path.read_bytes()

    result = gate.run(package, gate.HttpTransport(endpoint["url"]), read, **options)
    record_gate(stage, package, result.as_dict()["checks"], result.passed)
    return package, result
