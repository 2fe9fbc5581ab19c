"""Build the pipeline definition JSON, or reuse the last one when nothing it depends on changed.

Importing the sagemaker SDK and building take several seconds; a re-run with the same
configuration, code and target reuses the stored JSON without importing the SDK.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import warnings
from importlib.metadata import version
from pathlib import Path

from mlops.config import CONFIG_FILE, ROOT, Config, state_dir
from mlops.targets import Target

PIPELINE_SOURCES = Path(__file__).resolve().parent
DEFINITION_FILE = ROOT / "build" / "pipeline-definition.json"


def fingerprint(config: Config, target: Target) -> str:
    """What the definition depends on: config, build code, job scripts, SDK version, target."""
    sha = hashlib.sha256()
    for path in sorted([CONFIG_FILE, *PIPELINE_SOURCES.rglob("*.py")]):
        if "__pycache__" not in path.parts:
            sha.update(path.as_posix().encode())
            sha.update(path.read_bytes())
    for part in (version("sagemaker"), target.name, target.region, target.bucket, target.role,
                 config.data_file.name):
        sha.update(part.encode())
    return sha.hexdigest()[:20]


def _code_uris(definition_json: str, target: Target, config: Config) -> set[str]:
    prefix = re.escape(f"s3://{target.bucket}/{config.project}/code/")
    return set(re.findall(prefix + r'[^"]+', definition_json))


def build(config: Config, target: Target) -> str:
    """Build the definition with the SDK (slow: imports sagemaker) and return its JSON."""
    os.environ.setdefault("AWS_DEFAULT_REGION", target.region)  # the SDK reads it at import
    if target.name == "local":
        # The SDK creates boto3 clients at import; without credentials botocore would ask the
        # EC2 instance metadata service for some, which is a network call.
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    with _quiet_sdk():
        from model_build.pipeline import get_pipeline

        definition = json.loads(get_pipeline(config, target).definition())
    return json.dumps(definition, indent=2, sort_keys=True) + "\n"


@contextlib.contextmanager
def _quiet_sdk():
    """The SDK logs and warns about every field it drops from a pipeline definition."""
    logging.disable(logging.WARNING)  # its loggers set their own levels, so silence them all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def load_or_build(config: Config, target: Target, *, force: bool = False) -> tuple[dict, bool]:
    """The definition for `target`, and whether it was reused from an earlier build."""
    cache = state_dir() / "definitions" / f"{target.name}-{fingerprint(config, target)}.json"
    if not force and cache.exists():
        text = cache.read_text()
        if all(target.exists(uri) for uri in _code_uris(text, target, config)):
            _write(DEFINITION_FILE, text)
            return json.loads(text), True
    text = build(config, target)
    _write(cache, text)
    _write(DEFINITION_FILE, text)
    return json.loads(text), False


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)
