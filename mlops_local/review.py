"""What a reviewer reads of a model package and what they decide: the evaluation report, the
approve/reject rule. The CLI and the console share it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mlops_core.names import STAGES
from mlops_local.endpoint import lifecycle
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore, StoreError


class ApprovalError(ValueError):
    """A version that cannot be approved or rejected as asked; the message says why."""


@dataclass
class Change:
    name: str  # group/version
    status: str
    changed: bool  # False: the version already had that status, nothing was written
    serving: list[str] = field(default_factory=list)  # stages still serving a rejected version

    @property
    def unchanged(self) -> str:
        return f"{self.name} is already {self.status}; nothing changed"


def parse_version(text: str) -> int:
    # str.isdigit() and int() also take '١' (1 in Arabic-Indic digits) or '²'.
    if not (text.isascii() and text.isdecimal()):
        raise ApprovalError(f"version {text!r} is not a version number: give ASCII digits such "
                            "as 3 (see `mlops registry list`)")
    return int(text)


def set_status(group: str, version: str, status: str, note: str,
               registry: LocalRegistry | None = None) -> Change:
    """Set the version's ModelApprovalStatus and ApprovalDescription, unless it has it."""
    registry = registry or LocalRegistry()
    name = f"{group}/{parse_version(version)}"
    package = registry.describe_model_package(name)  # RegistryError: no such version
    if package["ModelApprovalStatus"] == status:
        return Change(name, status, changed=False)
    registry.update_model_package(ModelPackageArn=package["ModelPackageArn"],
                                  ModelApprovalStatus=status, ApprovalDescription=note)
    serving = stages_serving(package) if status == "Rejected" else []
    return Change(name, status, changed=True, serving=serving)


def served_models() -> dict[str, dict]:
    """stage -> the model_info (group, version, ...) of the stage's running local endpoint."""
    served = {}
    for stage in STAGES:
        try:
            served[stage] = lifecycle.status(stage)["model_info"]
        except ValueError:  # no endpoint runs for this stage
            continue
    return served


def stages_serving(package: dict) -> list[str]:
    """The stages whose running local endpoint serves this model package."""
    return [stage for stage, model in served_models().items()
            if (model.get("ModelPackageGroupName"), model.get("ModelPackageVersion")) == (
                package["ModelPackageGroupName"], package["ModelPackageVersion"])]


def evaluation_uri(package: dict) -> str | None:
    """Where the package's registered ModelQuality statistics (evaluation.json) are."""
    return package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get(
        "S3Uri")


def evaluation(package: dict, store: LocalStore | None = None) -> dict | None:
    """The package's registered ModelQuality statistics (evaluation.json), None if unreadable."""
    try:
        return json.loads((store or LocalStore()).path(evaluation_uri(package)).read_text())
    except (StoreError, OSError, TypeError, ValueError):
        return None
