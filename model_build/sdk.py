"""What the sagemaker SDK needs to build a pipeline definition offline, in one place.

`definition.build` wraps every factory call in `offline(target)`; nothing is changed at import
time, and everything is put back when the build ends:

- `SAGEMAKER_VALIDATE_ROLE=false`: the SDK would otherwise simulate the role's IAM policy
  (a network call) for every job it describes.
- `AWS_EC2_METADATA_DISABLED` on the local target: with no credentials botocore would ask the
  instance metadata service for some.
- The SDK validates its defaults config against a large JSON schema on every config look-up
  (about 60 per build, 0.5 s each); the config never changes during a build, so it is
  validated once per distinct config.
- Each ProcessingStep and TransformStep constructs a LocalSagemakerClient only to read the
  name of one of its methods; constructing one starts a boto3 session, S3 clients and a
  config check (0.1-0.3 s each), so the steps module gets a subclass that skips that.

The SDK classes the factories need changed are subclassed in `model_build.sessions`, not
patched. This module imports no SDK code itself, since importing the SDK already creates boto3
clients (the region must be set before). `check_sdk` names every SDK member the offline build
relies on; it runs first in `offline`, so a new SDK release that drops one fails the build with
that name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import warnings
from collections.abc import Iterator
from importlib import import_module
from importlib.metadata import version

from mlops_core.targets import Target

# (module, class, member): what this module and model_build.sessions override or wrap.
RELIED_ON = (
    ("sagemaker.core.config.config_manager", "SageMakerConfig", "validate_sagemaker_config"),
    ("sagemaker.train", "ModelTrainer", "_resolve_staging_bucket"),
    ("sagemaker.core.workflow.pipeline_context", "PipelineSession", "upload_data"),
    ("sagemaker.core.workflow.pipeline_context", "PipelineSession", "default_bucket"),
    ("sagemaker.serve.model_builder", "ModelBuilder", "_prepare_container_def"),
    ("sagemaker.mlops.workflow.steps", "LocalSagemakerClient", "create_processing_job"),
    ("sagemaker.mlops.workflow.steps", "LocalSagemakerClient", "create_transform_job"),
)


class SdkChanged(RuntimeError):
    """The installed sagemaker SDK lacks a member the offline build relies on."""


def check_sdk() -> None:
    """Fail, naming it, when the installed SDK lacks a member the offline build relies on."""
    for module, owner, member in RELIED_ON:
        if not callable(getattr(getattr(import_module(module), owner, None), member, None)):
            raise SdkChanged(
                f"sagemaker {version('sagemaker')}: {owner}.{member} is gone; the offline "
                "definition build (model_build/sdk.py, sessions.py) must follow this release"
            )


@functools.cache
def _validate_once(original, config_json: str) -> None:
    original(json.loads(config_json))


@functools.cache
def _method_names_of(client_class: type) -> type:
    """`client_class` as the steps use it, for its method names: made without a session."""
    return type(client_class.__name__, (client_class,), {"__init__": lambda self, *_, **__: None})


@contextlib.contextmanager
def offline(target: Target) -> Iterator[None]:
    """Build definitions for `target` with no network and no credentials, quietly."""
    environment = {"SAGEMAKER_VALIDATE_ROLE": "false"}
    if target.name == "local":
        environment["AWS_EC2_METADATA_DISABLED"] = "true"
    saved = {name: os.environ.get(name) for name in (*environment, "AWS_DEFAULT_REGION")}
    os.environ.update(environment)
    # The SDK creates boto3 clients when it is imported, so the region must be set first.
    os.environ.setdefault("AWS_DEFAULT_REGION", target.region)
    check_sdk()  # imports the SDK
    from sagemaker.core.config.config_manager import SageMakerConfig

    original = SageMakerConfig.__dict__["validate_sagemaker_config"]
    validate = original.__func__ if isinstance(original, staticmethod) else original
    SageMakerConfig.validate_sagemaker_config = staticmethod(
        lambda sagemaker_config=None: _validate_once(
            validate, json.dumps(sagemaker_config, sort_keys=True)))
    steps = import_module("sagemaker.mlops.workflow.steps")
    local_client = steps.LocalSagemakerClient
    steps.LocalSagemakerClient = _method_names_of(local_client)
    # The SDK logs and warns about every field it drops from a pipeline definition, and its
    # loggers set their own levels, so silence them all while building.
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
        SageMakerConfig.validate_sagemaker_config = original
        steps.LocalSagemakerClient = local_client
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
