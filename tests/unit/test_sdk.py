"""model_build.sdk: the SDK help for offline builds is explicit, undone after each build, and
fails loudly, naming the member, on an SDK release that no longer has what it relies on."""

from __future__ import annotations

import os
from importlib import import_module

import pytest

from mlops_core import config as project_config
from mlops_core import targets
from mlops_local.store import LocalStore
from model_build import sdk


def test_the_installed_sdk_has_everything_the_build_relies_on():
    sdk.check_sdk()
    for module, owner, member in sdk.RELIED_ON:
        assert callable(getattr(getattr(import_module(module), owner), member))


@pytest.mark.parametrize(("module", "owner", "member"), sdk.RELIED_ON)
def test_a_release_without_a_member_fails_the_build_naming_it(monkeypatch, module, owner, member):
    # A release whose class has every other member the build relies on, but not this one.
    others = {m: lambda self: None for _, o, m in sdk.RELIED_ON if o == owner and m != member}
    monkeypatch.setattr(import_module(module), owner, type(owner, (), others))
    with pytest.raises(sdk.SdkChanged, match=rf"{owner}\.{member} is gone"):
        sdk.check_sdk()


def test_offline_changes_nothing_outside_the_build(monkeypatch, tmp_path):
    from sagemaker.core.config.config_manager import SageMakerConfig
    from sagemaker.mlops.workflow import steps

    monkeypatch.delenv("SAGEMAKER_VALIDATE_ROLE", raising=False)
    validate = SageMakerConfig.__dict__["validate_sagemaker_config"]
    local_client = steps.LocalSagemakerClient
    target = targets.local(project_config.load(), LocalStore(tmp_path))
    with sdk.offline(target):
        assert os.environ["SAGEMAKER_VALIDATE_ROLE"] == "false"
        assert SageMakerConfig.__dict__["validate_sagemaker_config"] is not validate
        names_only = steps.LocalSagemakerClient()  # no session, S3 clients or config check
        assert isinstance(names_only, local_client) and not hasattr(names_only, "sagemaker_session")
        assert names_only.create_processing_job.__name__ == "create_processing_job"
    assert "SAGEMAKER_VALIDATE_ROLE" not in os.environ
    assert SageMakerConfig.__dict__["validate_sagemaker_config"] is validate
    assert steps.LocalSagemakerClient is local_client
