"""Build the pipeline definition JSON, or reuse the last one when nothing it depends on changed.

Importing the sagemaker SDK and building take several seconds; a re-run with the same
configuration, code and target reuses the stored JSON without importing the SDK.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from mlops_core import service_model
from mlops_core.config import CONFIG_FILE, ROOT, Config, state_dir
from mlops_core.files import write_atomic
from mlops_core.targets import Target

PIPELINE_SOURCES = Path(__file__).resolve().parent
DEFINITION_FILE = ROOT / "build" / "pipeline-definition.json"


@dataclass(frozen=True)
class Kind:
    """A pipeline this module builds: its factory, the code it depends on, where its JSON goes."""

    name: str  # part of the fingerprint
    load_factory: Callable[[], Callable]  # imports the factory (and the SDK) only to build
    sources: tuple[Path, ...]  # files and directories of Python code
    output: Path


class DefinitionRefused(ValueError):
    """SageMaker would refuse a step of the definition (its request breaks the API's shape)."""


def check(definition: dict, what: str) -> None:
    """Refuse a definition whose job steps SageMaker would refuse, naming each member."""
    problems = service_model.definition_problems(definition)
    if problems:
        raise DefinitionRefused(f"SageMaker would refuse {what}:\n  " + "\n  ".join(problems))


def _training_factory():
    from model_build.pipeline import get_pipeline

    return get_pipeline


TRAINING = Kind("training", _training_factory, (PIPELINE_SOURCES,), DEFINITION_FILE)


def fingerprint(config: Config, target: Target, kind: Kind = TRAINING) -> str:
    """What the definition depends on: config, build code, job scripts, SDK version, target
    (its names and its profile, which decides the steps)."""
    sha = hashlib.sha256(kind.name.encode())
    code = [p for s in kind.sources for p in (s.rglob("*.py") if s.is_dir() else [s])]
    for path in sorted([CONFIG_FILE, *code]):
        if "__pycache__" not in path.parts:
            sha.update(path.as_posix().encode())
            sha.update(path.read_bytes())
    for part in (version("sagemaker"), target.name, target.profile, target.region,
                 target.bucket, target.role, config.data_file.name):
        sha.update(part.encode())
    return sha.hexdigest()[:20]


def _code_uris(definition_json: str, target: Target, config: Config) -> set[str]:
    prefix = re.escape(f"s3://{target.bucket}/{config.project}/code/")
    return set(re.findall(prefix + r'[^"]+', definition_json))


def build(config: Config, target: Target, kind: Kind = TRAINING) -> str:
    """Build the definition with the SDK (slow: imports sagemaker) and return its JSON."""
    from model_build import sdk

    with sdk.offline(target):
        definition = json.loads(kind.load_factory()(config, target).definition())
    check(definition, f"the {kind.name} pipeline definition")
    return json.dumps(definition, indent=2, sort_keys=True) + "\n"


def cached(config: Config, target: Target, *, force: bool = False,
           kind: Kind = TRAINING) -> tuple[str, bool]:
    """The definition JSON for `target`, and whether it was reused from an earlier build."""
    name = f"{target.name}-{fingerprint(config, target, kind)}.json"
    cache = state_dir() / "definitions" / name
    if not force and cache.exists():
        text = cache.read_text()
        if all(target.exists(uri) for uri in _code_uris(text, target, config)):
            # The check may have changed since it was built.
            check(json.loads(text), f"the {kind.name} pipeline definition")
            return text, True
    text = build(config, target, kind)
    write_atomic(cache, text)
    return text, False


def load_or_build(config: Config, target: Target, *, force: bool = False,
                  kind: Kind = TRAINING) -> tuple[dict, bool]:
    """The definition for `target`, written to the kind's output file, and whether it was
    reused from an earlier build."""
    text, reused = cached(config, target, force=force, kind=kind)
    write_atomic(kind.output, text)
    return json.loads(text), reused
