"""`mlops console`: the local web console over the same state and code paths as the CLI."""

DEFAULT_PORT = 8780
