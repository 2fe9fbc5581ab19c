"""Read the project's CloudFormation templates (YAML with short-form intrinsics) as plain data.

`load` turns `!Ref X` into `{"Ref": "X"}`, `!GetAtt A.B` into `{"Fn::GetAtt": ["A", "B"]}`,
`!Condition C` into `{"Condition": "C"}` and every other `!Name` into `{"Fn::Name": ...}`,
which is what CloudFormation itself does with a YAML template. `compact_body` is the same
template as JSON without whitespace or comments: what `mlops infra deploy` sends, so the
commented YAML may grow past CloudFormation's 51,200-byte TemplateBody limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


class _Loader(yaml.SafeLoader):
    pass


def _intrinsic(loader: _Loader, tag: str, node: yaml.Node) -> dict:
    name = tag.removeprefix("!")
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if name == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    key = name if name in ("Ref", "Condition") else f"Fn::{name}"
    return {key: value}


_Loader.add_multi_constructor("!", _intrinsic)


def load(path: Path) -> dict:
    """The template as CloudFormation reads it."""
    return yaml.load(Path(path).read_text(), Loader=_Loader)


def compact_body(path: Path) -> str:
    """The template as compact JSON, for a CreateStack/UpdateStack TemplateBody."""
    return json.dumps(load(path), separators=(",", ":"))
