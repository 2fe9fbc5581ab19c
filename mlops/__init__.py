"""Local runtime and CLI: the stand-ins for AWS that let the project run on one machine."""
