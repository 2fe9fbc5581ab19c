"""The local endpoint: SageMaker's inference contract and data capture on this machine."""

from mlops_local.endpoint.lifecycle import EndpointError, invoke, start, status, stop

__all__ = ["EndpointError", "invoke", "start", "status", "stop"]
