"""Pipeline expressions: `Get`, `Std:Join` and `Std:JsonGet`, resolved against a run's state."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlops_local.engine.errors import DefinitionError, EngineError
from mlops_local.store import LocalStore, StoreError

FUNCTIONS = ("Get", "Std:Join", "Std:JsonGet")
_TOKEN = re.compile(r"\.?([^.\[\]'\"]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
# Keys by which SageMaker's property paths index lists: Outputs['train'], FinalMetricDataList['x'].
_NAME_KEYS = ("OutputName", "InputName", "ChannelName", "MetricName", "Name")


def is_expression(value) -> bool:
    """A one-key mapping whose key is a pipeline function (known or not)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key == "Get" or key.startswith("Std:")


def parse_path(path: str) -> list[str | int]:
    """`Steps.A.Outputs['x'].S3Uri` -> ['Steps', 'A', 'Outputs', 'x', 'S3Uri']."""
    tokens, position = [], 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if not match or match.end() == position:
            raise DefinitionError(f"cannot parse the property path {path!r} at {path[position:]!r}")
        name, index, single, double = match.groups()
        if index is not None:
            tokens.append(int(index))
        else:
            tokens.append(next(t for t in (name, single, double) if t is not None))
        position = match.end()
    return tokens


def references(value) -> Iterator[str]:
    """Every `Get` path in a value, including those inside `Std:*` functions."""
    if isinstance(value, dict):
        if set(value) == {"Get"} and isinstance(value["Get"], str):
            yield value["Get"]
            return
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def functions(value) -> Iterator[str]:
    """Every pipeline function name used in a value."""
    if isinstance(value, dict):
        if is_expression(value):
            yield next(iter(value))
        for item in value.values():
            yield from functions(item)
    elif isinstance(value, list):
        for item in value:
            yield from functions(item)


def walk(data, tokens: list[str | int], where: str):
    """Follow tokens into nested dicts and lists; lists are indexed by position or by name."""
    for token in tokens:
        if isinstance(data, dict) and token in data:
            data = data[token]
        elif isinstance(data, list) and isinstance(token, int) and -len(data) <= token < len(data):
            data = data[token]
        elif isinstance(data, list) and isinstance(token, str):
            named = [
                item for item in data
                if isinstance(item, dict) and any(item.get(k) == token for k in _NAME_KEYS)
            ]
            if not named:
                raise EngineError(f"{where}: no item named {token!r}")
            data = named[0]
        else:
            raise EngineError(f"{where}: no {token!r}")
    return data


def to_text(value) -> str:
    """A value as `Std:Join` writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@dataclass
class Context:
    """What expressions can see: parameters, execution variables and finished steps' properties."""

    parameters: dict
    execution: dict
    property_files: dict  # step -> {file name: {"OutputName", "FilePath"}}
    store: LocalStore
    properties: dict = field(default_factory=dict)  # step -> properties (describe-job shape)
    _json_cache: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_properties(self, step: str, properties: dict) -> None:
        with self._lock:
            self.properties[step] = properties

    def resolve(self, value):
        """A value with every expression in it replaced by what it evaluates to."""
        if isinstance(value, dict):
            if is_expression(value):
                return self._evaluate(value)
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value

    def _evaluate(self, expression: dict):
        (function, argument), = expression.items()
        if function == "Get":
            return self._get(argument)
        if function == "Std:Join":
            values = [to_text(self.resolve(v)) for v in argument.get("Values", [])]
            return str(argument.get("On", "")).join(values)
        if function == "Std:JsonGet":
            return self._json_get(argument)
        raise DefinitionError(f"unsupported pipeline function {function!r}")

    def _get(self, path: str):
        tokens = parse_path(path)
        root = tokens[0]
        if root == "Parameters" and len(tokens) == 2:
            if tokens[1] not in self.parameters:
                raise EngineError(f"Get {path}: no parameter {tokens[1]!r}")
            return self.parameters[tokens[1]]
        if root == "Execution" and len(tokens) == 2:
            if tokens[1] == "CurrentDateTime":
                return datetime.now(UTC).isoformat()
            if tokens[1] not in self.execution:
                raise EngineError(f"Get {path}: no execution variable {tokens[1]!r}")
            return self.execution[tokens[1]]
        if root == "Steps" and len(tokens) >= 2:
            with self._lock:
                properties = self.properties.get(tokens[1])
            if properties is None:
                raise EngineError(f"Get {path}: step {tokens[1]!r} has not run")
            return walk(properties, tokens[2:], f"Get {path}")
        raise EngineError(f"Get {path}: unsupported reference")

    def property_file_uri(self, step: str, name: str) -> str:
        declared = self.property_files.get(step, {}).get(name)
        if declared is None:
            raise EngineError(f"step {step} declares no property file {name!r}")
        outputs = self._get(f"Steps.{step}.ProcessingOutputConfig.Outputs")
        output = walk(outputs, [declared["OutputName"]], f"property file {name} of step {step}")
        base = output["S3Output"]["S3Uri"].rstrip("/")
        return f"{base}/{declared['FilePath'].lstrip('/')}"

    def _json_get(self, argument: dict):
        if "PropertyFile" in argument:
            reference = argument["PropertyFile"]
            path = reference.get("Get", "") if isinstance(reference, dict) else ""
            tokens = parse_path(path) if path else []
            if len(tokens) != 4 or tokens[0] != "Steps" or tokens[2] != "PropertyFiles":
                raise DefinitionError(f"Std:JsonGet: bad PropertyFile reference {reference!r}")
            uri = self.property_file_uri(tokens[1], tokens[3])
            source = f"property file {tokens[3]} of step {tokens[1]} ({uri})"
        elif "S3Uri" in argument:
            uri = to_text(self.resolve(argument["S3Uri"]))
            source = uri
        else:
            raise DefinitionError(f"Std:JsonGet needs PropertyFile or S3Uri: {argument!r}")
        document = self._load_json(uri, source)
        json_path = argument.get("Path", "")
        return walk(document, parse_path(json_path), f"Std:JsonGet {json_path!r} in {source}")

    def _load_json(self, uri: str, source: str):
        with self._lock:
            if uri in self._json_cache:
                return self._json_cache[uri]
        try:
            document = json.loads(self.store.path(uri).read_text())
        except (FileNotFoundError, IsADirectoryError, StoreError):
            raise EngineError(f"Std:JsonGet: {source} does not exist") from None
        except json.JSONDecodeError as err:
            raise EngineError(f"Std:JsonGet: {source} is not valid JSON: {err}") from None
        with self._lock:
            self._json_cache[uri] = document
        return document
