"""The bottom layer: configuration, content hashing, targets, template reading, and every name
and limit that more than one place uses. It imports nothing else of the project."""
