"""Step caching like SageMaker's: same arguments and same input data within ExpireAfter reuse
the earlier successful run's properties and outputs.

Input data is hashed by content, so new data under an unchanged URI misses the cache, and a
hit is taken only while the earlier run's outputs still hold what that run wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlops_core.files import write_atomic
from mlops_local.engine.errors import DefinitionError
from mlops_local.engine.tuning import model_uris
from mlops_local.store import LocalStore, StoreError

CACHED_TYPES = ("Processing", "Training", "Tuning", "Transform")
# SageMaker's documented cache key attributes ("Default cache key attributes by pipeline step
# type"): output locations are not among them, so per-execution output paths still hit.
KEY_ATTRIBUTES = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": ("AlgorithmSpecification", "CheckpointConfig", "DebugHookConfig",
                 "DebugRuleConfigurations", "Environment", "HyperParameters", "InputDataConfig"),
    "Tuning": ("HyperParameterTuningJobConfig", "TrainingJobDefinition",
               "TrainingJobDefinitions"),
    "Transform": ("DataProcessing", "Environment", "ModelName", "TransformInput"),
}
# Of a tuning step's TrainingJobDefinition, only these children count (the same page).
TUNING_DEFINITION_KEYS = ("AlgorithmSpecification", "HyperParameterRanges", "InputDataConfig",
                          "StaticHyperParameters", "TuningObjective")
_DURATION = re.compile(
    r"^P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration (P30D, PT1H, P1Y2M...); a year is 365 days and a month 30."""
    match = _DURATION.match(text or "")
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise DefinitionError(f"ExpireAfter {text!r} is not an ISO 8601 duration such as P30D")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    days = parts.get("years", 0) * 365 + parts.get("months", 0) * 30 + parts.get("days", 0)
    return timedelta(
        weeks=parts.get("weeks", 0), days=days, hours=parts.get("hours", 0),
        minutes=parts.get("minutes", 0), seconds=parts.get("seconds", 0),
    )


def _input_uris(step_type: str, arguments: dict) -> list[str]:
    if step_type == "Tuning":  # the trials' channels, and the code the framework image fetches
        definition = arguments.get("TrainingJobDefinition") or {}
        code = (definition.get("StaticHyperParameters") or {}).get("sagemaker_submit_directory")
        return _input_uris("Training", definition) + ([code] if code else [])
    if step_type == "Transform":
        return [arguments["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]]
    if step_type == "Processing":
        return [i["S3Input"]["S3Uri"] for i in arguments.get("ProcessingInputs", []) or []
                if i.get("S3Input")]
    return [c["DataSource"]["S3DataSource"]["S3Uri"]
            for c in arguments.get("InputDataConfig", []) or []
            if (c.get("DataSource") or {}).get("S3DataSource")]


def output_uris(step_type: str, properties: dict) -> list[str]:
    if step_type == "Tuning":
        return model_uris(properties)
    if step_type == "Transform":
        return [properties["TransformOutput"]["S3OutputPath"]]
    if step_type == "Processing":
        outputs = (properties.get("ProcessingOutputConfig") or {}).get("Outputs", []) or []
        return [o["S3Output"]["S3Uri"] for o in outputs]
    return [properties["ModelArtifacts"]["S3ModelArtifacts"]]


class StepCache:
    def __init__(self, root: Path, store: LocalStore):
        self.root = Path(root)
        self.store = store

    def _hash(self, uri: str) -> str:
        """SHA-256 of the object, or of every object's key and bytes under the prefix."""
        try:
            path = self.store.path(uri)
        except StoreError:
            return "unmapped"
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            return "missing"
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.relative_to(path).as_posix().encode() if file != path else b"")
            digest.update(b"\0")
            digest.update(file.read_bytes())
        return digest.hexdigest()

    def key(self, step_type: str, arguments: dict) -> str:
        inputs = {uri: self._hash(uri) for uri in _input_uris(step_type, arguments)}
        attributes = {name: arguments.get(name) for name in KEY_ATTRIBUTES[step_type]}
        if step_type == "Tuning":
            definition = attributes["TrainingJobDefinition"] or {}
            attributes["TrainingJobDefinition"] = {k: definition.get(k)
                                                   for k in TUNING_DEFINITION_KEYS}
        body = json.dumps({"type": step_type, "attributes": attributes, "inputs": inputs},
                          sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()

    def _entry_path(self, pipeline: str, step: str, key: str) -> Path:
        return self.root / pipeline / step / f"{key}.json"

    def lookup(self, pipeline: str, step: str, key: str, expire_after: str | None) -> dict | None:
        """The earlier successful run with this key, if still fresh and its outputs intact."""
        path = self._entry_path(pipeline, step, key)
        if not path.is_file():
            return None
        entry = json.loads(path.read_text())
        finished = datetime.fromisoformat(entry["finished"])
        if expire_after and datetime.now(UTC) - finished > parse_duration(expire_after):
            return None
        if any(self._hash(uri) != digest for uri, digest in entry["outputs"].items()):
            return None
        return entry

    def save(self, pipeline: str, step: str, key: str, step_type: str, execution_id: str,
             properties: dict, metadata: dict | None = None,
             finished: datetime | None = None) -> None:
        entry = {
            "execution_id": execution_id,
            "metadata": metadata or {},
            "finished": (finished or datetime.now(UTC)).isoformat(),
            "properties": properties,
            "outputs": {uri: self._hash(uri) for uri in output_uris(step_type, properties)},
        }
        write_atomic(self._entry_path(pipeline, step, key), json.dumps(entry, default=str))
