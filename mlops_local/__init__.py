"""The local stand-ins for AWS: the engine that runs pipeline definitions, the model registry,
the S3 store, the endpoint server, local deployment, batch runs and the monitoring schedule."""
