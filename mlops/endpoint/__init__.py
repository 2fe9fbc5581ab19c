"""The local endpoint: SageMaker's inference contract and data capture on this machine."""

from mlops.endpoint.process import EndpointError, invoke, start, status, stop

__all__ = ["EndpointError", "invoke", "start", "status", "stop"]
