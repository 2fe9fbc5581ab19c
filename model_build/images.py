"""The image every job of the training pipeline runs in, in one place: the definition and the
rehearsal's report of what it swapped (the registry account follows the region) agree on it."""

from __future__ import annotations

import logging

from mlops_core.config import Config


def sklearn_image(config: Config, region: str) -> str:
    """The SDK's scikit-learn image of `region` (a table look-up, no call)."""
    from sagemaker.core.image_uris import retrieve  # slow to import: only when asked

    # retrieve logs at INFO which Python version it picked; a build disables more already.
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.INFO))
    try:
        return retrieve("sklearn", region=region, version=config.sklearn_framework_version,
                        instance_type="ml.m5.large")
    finally:
        logging.disable(disabled)


def registry(image: str) -> str:
    """`<account>.dkr.ecr.<region>.amazonaws.com`: the part of an image URI a region decides."""
    return image.split("/", 1)[0]
