"""What a rehearsal swaps, and how two definitions differ member by member.

A rehearsal builds the aws profile's definition (the one CodeBuild upserts) on the local
target, so only the names that must point at this machine differ: bucket, role, region and
the image registry (its account follows the region). `compare` builds two definitions and
sorts every differing member (a JSON path such as `Steps[Tune].Arguments.RoleArn`) into those
that differ only in these names and the others, each with the reason where it is known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlops_core import targets
from mlops_core.config import Config
from mlops_core.targets import Target
from model_build import definition, images

# List members with one of these keys are matched by it, not by position.
IDENTITIES = ("Name", "InputName", "OutputName", "ChannelName")
ONLY = object()  # the side of a member that one definition lacks
NAMES, PROFILES, UNEXPLAINED = "names", "profiles", "unexplained"  # why a member differs
SHOWN = 90  # characters of a value in a report line


@dataclass(frozen=True)
class Swap:
    """A name the local side has in place of the aws one."""

    what: str
    aws: str  # empty when not configured
    local: str
    source: str  # where the aws value comes from

    def line(self) -> str:
        return f"{self.what}: {self.aws or targets.NOT_CONFIGURED} -> {self.local} ({self.source})"


def swaps(config: Config, local: Target, aws: Target | None = None) -> list[Swap]:
    """The names of `local` in place of the aws target's: those of `aws` when given (an offline
    build, placeholders where not configured), else the configured ones."""
    names = targets.aws_names(config)
    found = {"bucket": local.bucket, "role": local.role, "region": local.region}
    result = []
    for what, mine in found.items():
        name = names[what]
        value = getattr(aws, what) if aws else name.value
        source = (name.source if name.value or not aws
                  else f"{targets.NOT_CONFIGURED}, a placeholder; {name.source}")
        result.append(Swap(what, value, mine, source))
    region = aws.region if aws else names["region"].value
    result.append(Swap(
        "image registry",
        images.registry(images.sklearn_image(config, region)) if region else "",
        images.registry(images.sklearn_image(config, local.region)),
        "follows the region: the SDK's scikit-learn image"))
    return result


@dataclass(frozen=True)
class Difference:
    path: str
    local: object  # ONLY when the member is only in the aws definition
    aws: object  # ONLY when it is only in the local one
    why: str
    kind: str = UNEXPLAINED  # NAMES, PROFILES or UNEXPLAINED

    def line(self) -> str:
        if self.aws is ONLY:
            return f"{self.path} only in local: {self.why}"
        if self.local is ONLY:
            return f"{self.path} only in aws: {self.why}"
        if self.kind == NAMES:
            return f"{self.path} ({self.why})"
        return (f"{self.path}: local {_shown(self.local)}, aws {_shown(self.aws)}: {self.why}")


def _shown(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."


def _identity(*lists: list) -> str | None:
    """The key that names every item of each list of objects uniquely, if one does."""
    for key in IDENTITIES:
        named = [[item.get(key) if isinstance(item, dict) else None for item in items]
                 for items in lists]
        if all(all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
               for names in named):
            return key
    return None


def members(local, aws, path: str = "") -> list[tuple[str, object, object]]:
    """Every member where the two JSON values differ, as (path, local, aws); ONLY stands for
    the side that lacks it. Objects of wholly different keys (a Get against a Std:Join) are one
    member."""
    if isinstance(local, dict) and isinstance(aws, dict) and (set(local) & set(aws)
                                                              or not local or not aws):
        pairs = {key: (local.get(key, ONLY), aws.get(key, ONLY)) for key in local | aws}
        sep = "." if path else ""
        return [d for key in sorted(pairs) for d in _member(f"{path}{sep}{key}", *pairs[key])]
    if isinstance(local, list) and isinstance(aws, list):
        key = _identity(local, aws)
        if key:
            by_name = {item[key]: (item, ONLY) for item in local}
            for item in aws:
                by_name[item[key]] = (by_name.get(item[key], (ONLY,))[0], item)
            return [d for name, pair in by_name.items() for d in _member(f"{path}[{name}]", *pair)]
        if len(local) == len(aws):
            return [d for i, pair in enumerate(zip(local, aws, strict=True))
                    for d in _member(f"{path}[{i}]", *pair)]
    return [] if local == aws else [(path, local, aws)]


def _member(path: str, local, aws) -> list[tuple[str, object, object]]:
    if local is ONLY or aws is ONLY:
        return [(path, local, aws)]
    return members(local, aws, path)


@dataclass
class Comparison:
    """Two definitions, the names swapped between them, and how they differ."""

    local_profile: str
    aws_profile: str
    swaps: list[Swap]
    differences: list[Difference] = field(default_factory=list)

    def of(self, *kinds: str) -> list[Difference]:
        return [d for d in self.differences if d.kind in kinds]

    def lines(self) -> list[str]:
        lines = [f"local: the {self.local_profile} profile on the local target; aws: the "
                 f"{self.aws_profile} profile on the aws target",
                 "names (aws -> local):", *(f"  {s.line()}" for s in self.swaps),
                 f"{len(self.of(NAMES))} members differ only in these names:",
                 *(f"  {d.line()}" for d in self.of(NAMES))]
        other = self.of(PROFILES, UNEXPLAINED)
        if other:
            lines += [f"{len(other)} members differ otherwise:", *(f"  {d.line()}" for d in other)]
        else:
            lines.append("nothing else differs")
        return lines


class _Names:
    """Replaces the aws names by the local ones, in text and in uploaded files."""

    def __init__(self, swaps: list[Swap]):
        # The longest first, so a region inside a registry or a bucket name is not cut apart.
        self.pairs = sorted(((s.aws, s.local, s.what) for s in swaps if s.aws and s.aws != s.local),
                            key=lambda p: -len(p[0]))

    def swap(self, text: str) -> tuple[str, list[str]]:
        used = []
        for aws, local, what in self.pairs:
            if aws in text:
                text, used = text.replace(aws, local), [*used, what]
        return text, used

    def swap_bytes(self, data: bytes) -> bytes:
        for aws, local, _ in self.pairs:
            data = data.replace(aws.encode(), local.encode())
        return data


Files = Callable[[str], dict[str, bytes]]  # an upload's files under a URI, by relative name


def stored(store) -> Files:
    """The upload reader of a local store (anything with `path(uri)`)."""
    def files(uri: str) -> dict[str, bytes]:
        root = Path(store.path(uri))
        if root.is_file():
            return {root.name: root.read_bytes()}
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}

    return files


def _hyperparameters(definition_: dict) -> dict:
    """What the training or tuning step passes train.py, by hyperparameter name."""
    for step in definition_["Steps"]:
        arguments = step.get("Arguments") or {}
        if step["Type"] == "Training":
            return arguments.get("HyperParameters") or {}
        if step["Type"] == "Tuning":
            return arguments["TrainingJobDefinition"].get("StaticHyperParameters") or {}
    return {}


class _Explainer:
    """Why a member differs: the names, an upload whose files name them, or the profiles."""

    def __init__(self, config: Config, comparison: Comparison, readers: tuple[Files, Files],
                 definitions: dict):
        self.config = config
        self.comparison = comparison
        self.names = _Names(comparison.swaps)
        self.readers = readers
        self.definitions = definitions  # "local", "aws" -> the definition
        self.code = re.compile(rf"s3://[^/]+/{re.escape(config.project)}/code/[0-9a-f]{{16}}")

    def difference(self, path: str, local, aws) -> Difference:
        if local is not ONLY and aws is not ONLY:
            swapped, used = self.names.swap(json.dumps(aws, sort_keys=True))
            if used and swapped == json.dumps(local, sort_keys=True):
                return Difference(path, local, aws, ", ".join(used), NAMES)
            upload = self._upload(local, aws)
            if upload:
                return Difference(path, local, aws, upload, NAMES)
            why = self._reads(local, aws)
        else:
            why = self._only(path, "local" if aws is ONLY else "aws")
        return Difference(path, local, aws, why or "NOT explained by the names or the profiles",
                          PROFILES if why else UNEXPLAINED)

    def _upload(self, local, aws) -> str | None:
        """Why two URIs of uploads differ, when the files differ only in the names."""
        if not (isinstance(local, str) and isinstance(aws, str)):
            return None
        bases = [self.code.match(local), self.code.match(aws)]
        if not all(bases) or local[bases[0].end():] != aws[bases[1].end():]:
            return None
        trees = [files(base.group()) for files, base in zip(self.readers, bases, strict=True)]
        swapped = {name: self.names.swap_bytes(data) for name, data in trees[1].items()}
        if not trees[0] or trees[0] != swapped:
            return None
        naming = sorted(name for name, data in trees[1].items() if swapped[name] != data)
        used = ", ".join(self.names.swap(aws)[1]) or "its content hash"
        return f"{used}; an upload addressed by its content, whose {', '.join(naming)} names them"

    def _profile(self, side: str) -> str:
        return getattr(self.comparison, f"{side}_profile")

    def _setting(self, side: str) -> str:
        profile = self._profile(side)
        return f"[tuning] {profile} = {str(self.config.tunes(profile)).lower()}"

    def _only(self, path: str, side: str) -> str | None:
        """Why a member is in one definition only, as far as the profiles explain it."""
        other = "aws" if side == "local" else "local"
        step = re.fullmatch(r"Steps\[([^\]]+)\]", path)
        kind = step and next((s["Type"] for s in self.definitions[side]["Steps"]
                              if s["Name"] == step.group(1)), None)
        if kind == "Tuning":
            tuning = self.config.tuning
            return (f"the {self._profile(side)} profile tunes ({self._setting(side)}: "
                    f"{tuning.max_jobs} {tuning.strategy} trials of {tuning.objective})")
        if kind == "Training":
            return f"the {self._profile(side)} profile trains once ({self._setting(side)})"
        parameter = re.fullmatch(r"Parameters\[([^\]]+)\]", path)
        tuned = {r.name for r in self.config.tuning.ranges} if self.config.tuning else set()
        if parameter and self.config.tunes(self._profile(other)):
            reference = json.dumps({"Get": f"Parameters.{parameter.group(1)}"})
            name = next((n for n, v in _hyperparameters(self.definitions[side]).items()
                         if reference in json.dumps(v) and n in tuned), None)
            if name:
                return (f"the {self._profile(other)} profile's tuning job picks {name} "
                        f"([tuning.ranges.{name}]), so only a profile that trains once has it "
                        "as a pipeline parameter")
        return None

    def _reads(self, local, aws) -> str | None:
        """Why a member differs that reads a step only one definition has."""
        only = {step["Name"] for step in self.definitions["local"]["Steps"]} ^ {
            step["Name"] for step in self.definitions["aws"]["Steps"]}
        reads = [set(re.findall(r"Steps\.(\w+)", json.dumps(v))) & only for v in (local, aws)]
        if all(reads):
            return (f"reads the {', '.join(sorted(reads[0]))} step locally and the "
                    f"{', '.join(sorted(reads[1]))} step on aws, the steps the profiles differ in")
        return None


def compare(config: Config, local: tuple[Target, Files], aws: tuple[Target, Files],
            kind: definition.Kind = definition.TRAINING) -> Comparison:
    """Build (or reuse) both definitions of `kind` and sort how they differ. Each side is a
    target and how to read back what it uploaded (`stored(store)` for a local store)."""
    local_definition, aws_definition = (
        json.loads(definition.cached(config, target, kind=kind)[0]) for target, _ in (local, aws))
    comparison = Comparison(local[0].profile, aws[0].profile, swaps(config, local[0], aws[0]))
    return explain(config, comparison, (local_definition, aws_definition), (local[1], aws[1]))


def explain(config: Config, comparison: Comparison, definitions: tuple[dict, dict],
            readers: tuple[Files, Files]) -> Comparison:
    """Fill `comparison` with every member where the (local, aws) definitions differ, and why."""
    explainer = _Explainer(config, comparison, readers, dict(zip(("local", "aws"), definitions,
                                                                 strict=True)))
    comparison.differences = [explainer.difference(*member) for member in members(*definitions)]
    return comparison
