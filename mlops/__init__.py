"""The `mlops` command line, on top of every other package of the project."""
