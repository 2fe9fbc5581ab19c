"""Data-quality drift check: captured endpoint traffic against the model's training baseline.

One script for both engines. On AWS it runs as a SageMaker Processing job (see `main`); locally
`mlops_local.monitor` imports `run`. It reads SageMaker data capture (JSON Lines under
`<capture root>/v<model version>/<endpoint>/AllTraffic/YYYY/MM/DD/HH/`) for a time window,
compares the feature columns with the baseline's `statistics.json` and `constraints.json`, and
writes Model Monitor's `constraint_violations.json`, plus `drift_metrics.json` (the numbers)
and `report.html`, which lists the earlier runs under `--history-uri` (see `history.py`).

Beside the traffic the endpoint answered it counts the traffic it refused (the local endpoint's
`<endpoint>/refused/` records: an unknown category, a wrong column count, ...), which a
comparison of the answered traffic cannot see; above `max_refused_share` of the rows the check
reports a violation. Requests the staging gate sent (InferenceId `mlops-gate-...`) are probes,
not users' traffic: they are left out and counted.

Imports only the standard library, numpy and pandas (boto3 only in `main`), so it runs in the
SageMaker scikit-learn container.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

if __package__:
    from model_build.scripts import contract

    from .history import iso_time, read_history
    from .report import render_report
else:  # run as a script (the Processing job): its helpers and contract.py sit beside this file
    import contract
    from history import iso_time, read_history
    from report import render_report

KS_ALPHA = 0.01  # significance of the "Robust" comparison's allowance, over all features
PROBE_PREFIX = "mlops-gate-"  # InferenceId of the staging gate's requests
REFUSED_FOLDER = "refused"
DEFAULT_MAX_REFUSED_SHARE = 0.05
PLOT_POINTS = 200
HOUR_FOLDER = re.compile(r"(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+$")
VERSION_SEGMENT = re.compile(r"(?:^|/)v(\d+)/?$")

MetricSink = Callable[[list[dict]], None]


class DriftCheckError(Exception):
    """The check cannot give a verdict; the message names the problem."""


# ---------------------------------------------------------------------------- capture sources


class DirectorySource:
    """Capture files under a local directory (a Processing input, or the local store)."""

    def __init__(self, root: Path, name: str | None = None):
        self.root = Path(root)
        self.name = name or str(self.root)  # how messages call it, e.g. its s3:// URI

    def keys(self, suffix: str = ".jsonl") -> list[str]:
        """The files ending in suffix (capture files by default), relative to the root."""
        if not self.root.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob(f"*{suffix}"))

    def read(self, key: str) -> str:
        return (self.root / key).read_text(encoding="utf-8", errors="replace")

    def sibling_versions(self) -> dict[str, int]:
        """Other `v<N>` prefixes beside this one, with how many capture files each holds."""
        parent = self.root.parent
        if not parent.is_dir():
            return {}
        found = {
            p.name: sum(1 for _ in p.rglob("*.jsonl"))
            for p in parent.iterdir()
            if p.is_dir() and re.fullmatch(r"v\d+", p.name) and p != self.root
        }
        return {name: count for name, count in sorted(found.items()) if count}


class S3Source:
    """Capture files under an s3:// prefix, read with an injected boto3 S3 client."""

    def __init__(self, client, uri: str):
        match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
        if not match:
            raise DriftCheckError(f"not an s3:// URI: {uri!r}")
        self.client, self.bucket = client, match.group(1)
        self.prefix = match.group(2).rstrip("/") + "/" if match.group(2) else ""
        self.name = uri

    def _list(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def keys(self, suffix: str = ".jsonl") -> list[str]:
        return sorted(
            key[len(self.prefix):] for key in self._list(self.prefix) if key.endswith(suffix)
        )

    def read(self, key: str) -> str:
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        return body.read().decode("utf-8", errors="replace")

    def sibling_versions(self) -> dict[str, int]:
        parent = self.prefix.rstrip("/").rpartition("/")[0]
        parent = parent + "/" if parent else ""
        counts: dict[str, int] = {}
        for key in self._list(parent):
            head = key[len(parent):].split("/", 1)[0]
            if re.fullmatch(r"v\d+", head) and parent + head + "/" != self.prefix:
                counts[head] = counts.get(head, 0) + key.endswith(".jsonl")
        return {name: count for name, count in sorted(counts.items()) if count}


# ---------------------------------------------------------------------------- reading capture


@dataclass(frozen=True)
class Window:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive

    def describe(self) -> str:
        start = self.start.isoformat() if self.start else "the beginning"
        end = self.end.isoformat() if self.end else "now"
        return f"from {start} to {end}"


@dataclass
class Capture:
    rows: list[list[str]]
    files: int = 0
    lines: int = 0
    invalid_lines: int = 0
    invalid_bodies: int = 0
    outside_window: int = 0
    probes: int = 0
    first_time: str | None = None
    last_time: str | None = None
    examples: list[str] = field(default_factory=list)


def parse_time(text: str) -> datetime:
    try:
        return iso_time(text)
    except ValueError:
        raise DriftCheckError(f"not an ISO 8601 time: {text!r}") from None


def files_in_window(keys: list[str], window: Window) -> list[str]:
    """Keep files whose YYYY/MM/DD/HH folder overlaps the window (others are read whole)."""
    kept = []
    for key in keys:
        match = HOUR_FOLDER.search(key)
        if match:
            hour = datetime(*map(int, match.groups()), tzinfo=UTC)
            if window.start and hour + timedelta(hours=1) <= window.start:
                continue
            if window.end and hour >= window.end:
                continue
        kept.append(key)
    return kept


def _body(payload: dict) -> tuple[bool, str | list[list[str]]]:
    """(is CSV, text) of one request body, or (False, rows) of a JSON {"instances": [...]}."""
    data, encoding = payload["data"], str(payload.get("encoding", "CSV")).upper()
    content_type = str(payload.get("observedContentType", "text/csv")).lower()
    if encoding == "BASE64":
        data = base64.b64decode(data, validate=True).decode("utf-8")
    if "json" not in content_type and encoding != "JSON":
        return True, str(data)
    body = json.loads(data) if isinstance(data, str) else data
    instances = body.get("instances") if isinstance(body, dict) else body
    if not isinstance(instances, list):
        raise ValueError("JSON body has no 'instances' list")
    return False, [_instance_row(instance) for instance in instances]


def _cell(value) -> str:
    return "" if value is None else str(value)


def _instance_row(instance) -> list[str]:
    if isinstance(instance, list):
        return [_cell(v) for v in instance]
    if isinstance(instance, dict):
        return [_cell(v) for v in instance.get("features", instance.values())]
    raise ValueError(f"instance {instance!r} is neither a list nor an object")


def is_probe(inference_id) -> bool:
    return isinstance(inference_id, str) and inference_id.startswith(PROBE_PREFIX)


def is_refusal_key(key: str) -> bool:
    return REFUSED_FOLDER in key.split("/")[:-1]


def _records(lines: list[str]) -> list:
    """Each line's JSON value, None where a line is not JSON; a file of whole lines is parsed
    by one json.loads, a third faster than one per line."""
    try:
        records = json.loads(f"[{','.join(lines)}]")
        if len(records) == len(lines):  # else a line held more than one value: "1, 2"
            return records
    except ValueError:
        pass
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append(None)
    return records


# A JSON string with no escape, no control character and no character str.splitlines breaks
# at: its text is its value, and it never spans two lines.
_CHARS = r'[^"\\\x00-\x1f\x85\u2028\u2029]*'
_STRING, _VALUE = f'"{_CHARS}"', f'"({_CHARS})"'
_PAIRS = f"(?:{_STRING}: ?{_STRING}(?:, ?{_STRING}: ?{_STRING})*)?"
# A whole line that is the record of one CSV request as the local endpoint and SageMaker write
# it (with json.dumps' spaces or none), every string plain: its body, InferenceId and time.
_CSV_RECORD = re.compile(
    r'^\{"captureData": ?\{"endpointInput": ?\{"observedContentType": ?"text/csv", ?'
    rf'"mode": ?"INPUT", ?"data": ?{_VALUE}, ?"encoding": ?"CSV"\}}, ?'
    rf'"endpointOutput": ?\{{{_PAIRS}\}}\}}, ?"eventMetadata": ?\{{"eventId": ?{_STRING}, ?'
    rf'(?:"inferenceId": ?{_VALUE}, ?)?"inferenceTime": ?{_VALUE}\}}, ?"eventVersion": ?"0"\}}$',
    re.MULTILINE)


def _read_file(key: str, text: str, capture: Capture, include_probes: bool
               ) -> tuple[list, list[str]]:
    """The payloads of a file's records (a CSV body as its text) and their times; lines that
    are not capture records and the probes are counted in `capture`."""
    plain = _CSV_RECORD.findall(text)
    if len(plain) == text.count("\n") + (not text.endswith("\n")):
        # Every line is a plain CSV record (a match is one whole line): no JSON to decode.
        capture.lines += len(plain)
        kept = plain
        if not include_probes and PROBE_PREFIX in text:
            kept = [r for r in plain if not is_probe(r[1])]
        capture.probes += len(plain) - len(kept)
        return [body for body, _, _ in kept], [moment for _, _, moment in kept]
    lines = [line for line in text.splitlines() if line.strip()]
    capture.lines += len(lines)
    payloads, times = [], []
    for line, record in zip(lines, _records(lines), strict=True):
        try:
            if record is None:
                raise ValueError(line)
            payload = record["captureData"]["endpointInput"]
            moment = record["eventMetadata"]["inferenceTime"]
        except (ValueError, KeyError, TypeError):
            capture.invalid_lines += 1
            if len(capture.examples) < 3:
                capture.examples.append(f"{key}: {line[:80]}")
            continue
        if not include_probes and is_probe(record["eventMetadata"].get("inferenceId")):
            capture.probes += 1
            continue
        payloads.append(payload)
        times.append(moment)
    return payloads, times


def read_capture(source, keys: list[str], window: Window, include_probes: bool = False
                 ) -> Capture:
    """Every request row captured in the window (the gate's probes left out and counted),
    with counts of what could not be read."""
    keys = files_in_window(keys, window)
    capture = Capture(rows=[], files=len(keys))
    times, payloads = [], []
    for key in keys:
        file_payloads, file_times = _read_file(key, source.read(key), capture, include_probes)
        payloads += file_payloads
        times += file_times
    if not times:
        return capture
    moments = pd.to_datetime(pd.Series(times), utc=True, format="ISO8601", errors="coerce")
    timed = moments.notna()
    capture.invalid_lines += int((~timed).sum())
    inside = timed
    if window.start:
        inside = inside & (moments >= pd.Timestamp(window.start))
    if window.end:
        inside = inside & (moments < pd.Timestamp(window.end))
    valid = moments.dropna()
    if len(valid):
        capture.first_time, capture.last_time = str(valid.min()), str(valid.max())
    capture.outside_window = int(timed.sum() - inside.sum())
    csv_bodies = []
    for index in np.flatnonzero(inside.to_numpy()):
        payload = payloads[index]
        if isinstance(payload, str):  # a plain CSV record's body
            csv_bodies.append(payload)
            continue
        if payload.get("encoding") == "CSV" and payload.get("observedContentType") == "text/csv":
            csv_bodies.append(str(payload["data"]))  # the endpoint's usual record, in short
            continue
        try:
            is_csv, content = _body(payload)
        except (ValueError, KeyError, TypeError, binascii.Error):
            capture.invalid_bodies += 1
            continue
        if is_csv:
            csv_bodies.append(content)
        else:
            capture.rows.extend(content)
    # One pass over every CSV body is several times faster than one reader per request.
    capture.rows.extend(contract.csv_rows("\n".join(csv_bodies)))
    return capture


@dataclass
class Refusals:
    """Refused requests in the window: how many, their rows, and bad rows by problem."""

    requests: int = 0
    rows: int = 0
    probes: int = 0
    problems: dict = field(default_factory=dict)  # (reason, feature, value) -> bad rows

    def _ordered(self) -> list[tuple[tuple, int]]:
        return sorted(self.problems.items(), key=lambda item: -item[1])  # most rows first

    def by_feature(self) -> list[dict]:
        """The problems as {reason, feature, value, rows}, most rows first."""
        return [{"reason": reason, "feature": feature, "value": value, "rows": rows}
                for (reason, feature, value), rows in self._ordered()]

    def lines(self, total_rows: int) -> list[str]:
        """One sentence per problem, most rows first, with its share of all rows sent."""
        return [_problem_line(*problem, rows, total_rows) for problem, rows in self._ordered()]


def _problem_line(reason: str, feature, value, rows: int, total: int) -> str:
    share = f"{rows} of {total} rows ({rows / max(total, 1):.0%})"
    if reason == "unknown category":
        return f"{feature}: {share} carried {value!r}, not a category of the schema"
    if feature is None:
        detail = f" ({value} columns)" if reason == "wrong column count" and value else ""
        return f"{share}: {reason}{detail}"
    return f"{feature}: {share} {reason}" + (f" ({value!r})" if value is not None else "")


def read_refusals(source, keys: list[str], window: Window, include_probes: bool = False
                  ) -> Refusals:
    """The refusal records (one per refused request) in the window."""
    refusals = Refusals()
    for key in files_in_window(keys, window):
        for line in source.read(key).splitlines():
            try:
                record = json.loads(line)
                moment = parse_time(record["time"])
                rows, problems = int(record["rows"]), record["problems"]
            except (ValueError, KeyError, TypeError, DriftCheckError):
                continue  # a refusal record that cannot be read counts for nothing
            if (window.start and moment < window.start) or (window.end and moment >= window.end):
                continue
            if not include_probes and is_probe(record.get("inferenceId")):
                refusals.probes += 1
                continue
            refusals.requests += 1
            refusals.rows += rows
            for problem in problems:
                value = problem.get("value")
                group = (str(problem.get("reason")), problem.get("feature"),
                         value if isinstance(value, str | int | float) else None)
                refusals.problems[group] = refusals.problems.get(group, 0) + int(problem["rows"])
    return refusals


def check_version(source, model_version: int | None) -> None:
    """Traffic of one model version is only ever compared with that version's baseline."""
    match = VERSION_SEGMENT.search(source.name)
    if model_version is not None and match and int(match.group(1)) != int(model_version):
        raise DriftCheckError(
            f"capture prefix {source.name} holds traffic of model version {match.group(1)}, "
            f"but the baseline is of model version {model_version}"
        )


def load_traffic(source, window: Window, model_version: int | None = None,
                 include_probes: bool = False) -> tuple[Capture, Refusals]:
    """Read the window's capture and refusals, or fail with the reason there is nothing to
    check (traffic that was all refused is something to check)."""
    check_version(source, model_version)
    keys = source.keys()
    refusals = read_refusals(source, [k for k in keys if is_refusal_key(k)], window,
                             include_probes)
    keys = [k for k in keys if not is_refusal_key(k)]
    if refusals.requests:
        return read_capture(source, keys, window, include_probes), refusals
    if not keys:
        others = source.sibling_versions()
        if others:
            listed = ", ".join(f"{name} ({count} files)" for name, count in others.items())
            raise DriftCheckError(
                f"no captured traffic under {source.name}; capture exists only for other model "
                f"versions: {listed}. That traffic was served by another model version and is "
                "not compared with this version's baseline"
            )
        raise DriftCheckError(f"no capture files under {source.name}")
    capture = read_capture(source, keys, window, include_probes)
    if capture.lines and capture.invalid_lines == capture.lines:
        raise DriftCheckError(
            f"all {capture.lines} capture lines under {source.name} are invalid JSON or not "
            f"capture records, e.g. {capture.examples[0]!r}"
        )
    if not capture.rows and capture.invalid_bodies:
        raise DriftCheckError(
            f"none of the {capture.invalid_bodies} captured request bodies {window.describe()} "
            f"under {source.name} could be parsed as CSV or JSON instances"
        )
    if not capture.rows:
        seen = (f"; {capture.outside_window} records fall outside it, captured from "
                f"{capture.first_time} to {capture.last_time}") if capture.outside_window else ""
        probes = (f"; the {capture.probes} records of the staging gate's probes are left out"
                  if capture.probes else "")
        raise DriftCheckError(
            f"no captured records {window.describe()} under {source.name}{seen}{probes}"
        )
    return capture, refusals


# ---------------------------------------------------------------------------- baseline


@dataclass
class Baseline:
    statistics: dict
    constraints: dict

    @property
    def names(self) -> list[str]:
        return [f["name"] for f in self.statistics["features"]]

    def feature_statistics(self, name: str) -> dict:
        return next(f for f in self.statistics["features"] if f["name"] == name)

    def feature_constraints(self, name: str) -> dict:
        return next((f for f in self.constraints["features"] if f["name"] == name), {})

    @property
    def config(self) -> dict:
        return self.constraints.get("monitoring_config", {})


def load_baseline(statistics_path: Path, constraints_path: Path) -> Baseline:
    documents = []
    for path in (Path(statistics_path), Path(constraints_path)):
        try:
            documents.append(json.loads(path.read_text()))
        except FileNotFoundError:
            raise DriftCheckError(f"baseline file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise DriftCheckError(f"baseline file {path} is not valid JSON: {err}") from None
    statistics, constraints = documents
    if not statistics.get("features") or "features" not in constraints:
        raise DriftCheckError(
            f"{statistics_path} or {constraints_path} is not a Model Monitor baseline "
            "(no 'features')"
        )
    return Baseline(statistics, constraints)


# ---------------------------------------------------------------------------- comparison


@dataclass
class FeatureCheck:
    name: str
    inferred_type: str
    distance: float | None
    threshold: float | None
    comparison_threshold: float
    method: str
    verdict: str  # of the distribution: "ok", "drift", "inconclusive" or "not compared"
    checks: list[str]  # the constraint checks this feature violates
    completeness: float
    records: int
    plot: dict = field(default_factory=dict)


def ks_allowance(n_baseline: float, n_current: int, alpha: float = KS_ALPHA) -> float:
    """The CDF distance two samples of these sizes reach by chance at `alpha` (two-sample KS)."""
    c_alpha = math.sqrt(-math.log(alpha / 2) / 2)
    return c_alpha * math.sqrt((n_baseline + n_current) / (n_baseline * n_current))


def cdf_distance(sketch: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """L-infinity distance between the baseline sketch's CDF and the values' CDF, and where."""
    current = np.sort(values)
    points = np.union1d(sketch, current)
    gaps = np.abs(
        np.searchsorted(sketch, points, side="right") / len(sketch)
        - np.searchsorted(current, points, side="right") / len(current)
    )
    at = int(np.argmax(gaps))
    return float(gaps[at]), float(points[at])


def frequency_distance(baseline: dict[str, float], current: pd.Series) -> float:
    """L-infinity distance between category frequencies (unseen categories count too)."""
    total = sum(baseline.values())
    seen = current.value_counts(normalize=True)
    categories = set(baseline) | set(seen.index)
    return float(max(abs(baseline.get(c, 0) / total - seen.get(c, 0.0)) for c in categories))


def _curve(xs: np.ndarray) -> list[list[float]]:
    """At most PLOT_POINTS points (x, F(x)) of an empirical CDF, for the report."""
    ordered = np.sort(xs)
    picks = np.unique(np.linspace(0, len(ordered) - 1, min(PLOT_POINTS, len(ordered))).astype(int))
    return [[float(ordered[i]), (i + 1) / len(ordered)] for i in picks]


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


@dataclass(frozen=True)
class Cells:
    """A column as its distinct cells and each cell's index into them, so the contract's
    per-cell functions run once per distinct value (traffic repeats its values)."""

    distinct: pd.Series
    codes: np.ndarray

    @classmethod
    def of(cls, cells: pd.Series) -> Cells:
        codes, distinct = pd.factorize(cells.to_numpy(dtype=object), use_na_sentinel=False)
        return cls(pd.Series(distinct, dtype=object), codes)

    def __len__(self) -> int:
        return len(self.codes)

    def keep(self, distinct_mask: np.ndarray) -> Cells:
        """The cells whose distinct value the mask keeps."""
        return Cells(self.distinct, self.codes[np.asarray(distinct_mask)[self.codes]])

    def each(self, distinct_values) -> np.ndarray:
        """Per cell, the value computed for its distinct value."""
        return np.asarray(distinct_values)[self.codes]


class Comparison:
    """Checks the columns of the captured rows against one baseline; collects violations."""

    def __init__(self, baseline: Baseline, compared: int = 1):
        self.baseline = baseline
        # KS_ALPHA for the whole check, not per feature: one of ten features reaching the
        # allowance by chance would otherwise call drift on one window in ten (Bonferroni).
        self.alpha = KS_ALPHA / max(1, compared)
        self.violations: list[dict] = []
        distribution = baseline.config.get("distribution_constraints", {})
        self.compare = distribution.get("perform_comparison", "Enabled") == "Enabled"
        self.robust = distribution.get("comparison_method", "Robust") == "Robust"
        self.numeric_threshold = float(distribution.get("comparison_threshold", 0.1))
        self.categorical_threshold = float(
            distribution.get("categorical_comparison_threshold", self.numeric_threshold)
        )

    def violate(self, feature: str, check: str, description: str) -> None:
        self.violations.append(
            {"feature_name": feature, "constraint_check_type": check, "description": description}
        )

    def threshold(self, configured: float, n_baseline: float, n_current: int) -> float:
        if not self.robust:
            return configured
        return max(configured, ks_allowance(n_baseline, n_current, self.alpha))

    def feature(self, name: str, cells: pd.Series) -> FeatureCheck:
        stats = self.baseline.feature_statistics(name)
        limits = self.baseline.feature_constraints(name)
        overrides = limits.get("monitoringConfigOverrides") or {}
        column = Cells.of(cells)
        present = column.keep(~contract.missing_mask(column.distinct))
        completeness = len(present) / len(cells)
        expected = float(limits.get("completeness", 0.0))
        if completeness < expected - 1e-9:
            self.violate(name, "completeness_check",
                         f"Data completeness requirement is not met. Expected completeness: "
                         f"{_pct(expected)}. Observed: Only {_pct(completeness)} of data is "
                         "complete.")
        if "string_statistics" in stats:
            check = self._categorical(name, stats, limits, overrides, present)
        else:
            check = self._numeric(name, stats, overrides, present)
        check.completeness = completeness
        check.checks = [v["constraint_check_type"] for v in self.violations
                        if v["feature_name"] == name]
        return check

    def _distribution_verdict(self, name, distance, threshold, configured) -> str:
        if distance is None or not self.compare:
            return "not compared"
        if distance > threshold:
            self.violate(name, "baseline_drift_check",
                         f"Baseline drift distance: {distance} exceeds threshold: {threshold}")
            return "drift"
        # A threshold widened beyond the configured one means too few records to see that drift.
        return "inconclusive" if threshold > configured else "ok"

    def _numeric(self, name, stats, overrides, present: Cells) -> FeatureCheck:
        numeric = stats["numerical_statistics"]
        inferred = stats["inferred_type"]
        values = present.each(contract.numbers(present.distinct))
        matches = ~np.isnan(values)
        if inferred == "Integral":
            matches &= np.mod(np.nan_to_num(values), 1) == 0
        allowed = float(self.baseline.config.get("datatype_check_threshold", 0.1))
        if len(present) and (1 - matches.mean()) > allowed:
            self.violate(name, "data_type_check",
                         f"Data type match requirement is not met. Expected data type: "
                         f"{inferred}, Expected match: {_pct(1 - allowed)}. Observed: Only "
                         f"{_pct(matches.mean())} of data is {inferred}.")
        numbers = values[~np.isnan(values)]
        configured = float(overrides.get("comparison_threshold", self.numeric_threshold))
        sketch = np.sort(np.concatenate(
            [np.asarray(level, dtype=float) for level in numeric["distribution"]["kll"]["sketch"]
             ["data"]]
        ))
        distance = threshold = None
        plot = {"kind": "cdf", "baseline": _curve(sketch)}
        if len(numbers):
            distance, at = cdf_distance(sketch, numbers)
            threshold = self.threshold(configured, numeric["common"]["num_present"], len(numbers))
            plot.update(current=_curve(numbers), at=at)
        verdict = self._distribution_verdict(name, distance, threshold, configured)
        return FeatureCheck(name, inferred, distance, threshold, configured,
                            "Robust" if self.robust else "Simple", verdict, [], 0.0,
                            len(numbers), plot)

    def _categorical(self, name, stats, limits, overrides, present: Cells) -> FeatureCheck:
        strings = stats["string_statistics"]
        counts = {b["value"]: float(b["count"])
                  for b in strings["distribution"]["categorical"]["buckets"]}
        domain = set((limits.get("string_constraints") or {}).get("domains", counts))
        meant = contract.categories_of(present.distinct, domain)  # 2, 2.0, "2.0": one value
        outside = ~meant.isin(domain).to_numpy()
        meant[outside] = meant[outside].str.strip()  # " U" and "U" are one unknown value
        present, outside = pd.Series(present.each(meant), dtype=object), present.each(outside)
        unknown = present[outside]
        allowed = float(self.baseline.config.get("domain_content_threshold", 0.1))
        if len(present) and len(unknown) / len(present) > allowed:
            examples = ", ".join(repr(v) for v in unknown.value_counts().index[:3])
            self.violate(name, "categorical_values_check",
                         f"Domain content requirement is not met. Expected: at most "
                         f"{_pct(allowed)} of values outside the baseline domain "
                         f"{sorted(domain)}. Observed: {_pct(len(unknown) / len(present))} "
                         f"of data is outside it, e.g. {examples}.")
        configured = float(overrides.get("comparison_threshold", self.categorical_threshold))
        distance = threshold = None
        total = sum(counts.values())
        plot = {"kind": "bars", "baseline": {k: v / total for k, v in counts.items()}}
        if len(present):
            distance = frequency_distance(counts, present)
            threshold = self.threshold(configured, total, len(present))
            plot["current"] = {str(k): float(v)
                               for k, v in present.value_counts(normalize=True).items()}
        verdict = self._distribution_verdict(name, distance, threshold, configured)
        return FeatureCheck(name, "String", distance, threshold, configured,
                            "Robust" if self.robust else "Simple", verdict, [], 0.0,
                            len(present), plot)

    def column_counts(self, rows: list[list[str]], names: list[str]) -> list[list[str]]:
        """The rows with one cell per baseline feature; the others become column violations."""
        widths = np.fromiter((len(r) for r in rows), dtype=int, count=len(rows))
        expected = len(names)
        for label, check, mask in (("missing", "missing_column_check", widths < expected),
                                   ("extra", "extra_column_check", widths > expected)):
            if mask.any():
                width = int(np.bincount(widths[mask]).argmax())
                feature = (",".join(names[width:]) if width < expected
                           else ",".join(f"_c{i}" for i in range(expected, width)))
                self.violate(feature, check,
                             f"There are {label} columns in current dataset. Number of columns "
                             f"in current dataset: {width}, Number of columns in baseline "
                             f"constraints: {expected} ({int(mask.sum())} of {len(rows)} rows "
                             "left out of the other checks)")
        good = widths == expected
        if not good.any():
            raise DriftCheckError(
                f"no captured row has the baseline's {expected} columns ({', '.join(names)}); "
                f"rows have {sorted(set(widths.tolist()))} columns"
            )
        return [row for row, ok in zip(rows, good, strict=True) if ok]


# ---------------------------------------------------------------------------- the whole check


@dataclass
class DriftResult:
    verdict: str  # "drift", "violations", "inconclusive" or "no drift"
    features: list[FeatureCheck]
    violations: list[dict]
    counts: dict
    window: dict
    output_dir: Path | None = None
    refusals: list[str] = field(default_factory=list)  # one sentence per refusal problem
    refused: list[dict] = field(default_factory=list)  # Refusals.by_feature
    time: str = ""  # when the check ran, ISO 8601 UTC

    @property
    def report_path(self) -> Path | None:
        return self.output_dir / "report.html" if self.output_dir else None


def overall_verdict(features: list[FeatureCheck], violations: list[dict]) -> str:
    if any(f.verdict == "drift" for f in features):
        return "drift"
    if violations:
        return "violations"
    if not features or any(f.verdict != "ok" for f in features):
        return "inconclusive"
    return "no drift"


def drift_metrics(result: DriftResult) -> dict:
    features = []
    for check in result.features:
        entry = asdict(check)
        entry.pop("plot")
        features.append(entry)
    return {"verdict": result.verdict, "time": result.time, "window": result.window,
            "records": result.counts, "features": features, "refusals": result.refusals,
            "refused": result.refused}


def metric_data(result: DriftResult) -> list[dict]:
    """CloudWatch MetricDatum entries, named as Model Monitor's data-quality metrics are."""
    data = []
    for check in result.features:
        if check.distance is not None:
            data.append({"MetricName": f"feature_baseline_drift_{check.name}",
                         "Value": check.distance, "Unit": "None"})
        data.append({"MetricName": f"feature_non_null_{check.name}",
                     "Value": check.completeness, "Unit": "None"})
    data.append({"MetricName": "constraint_violations", "Value": float(len(result.violations)),
                 "Unit": "Count"})
    data.append({"MetricName": "refused_rows", "Value": float(result.counts["refused_rows"]),
                 "Unit": "Count"})
    return data


def write_json(path: Path, document: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2))
    partial.replace(path)


def run(
    source,
    statistics_path: Path,
    constraints_path: Path,
    output_dir: Path | None,
    window: Window | None = None,
    model_version: int | None = None,
    feature_names: list[str] | None = None,
    metrics_sink: MetricSink | None = None,
    max_refused_share: float = DEFAULT_MAX_REFUSED_SHARE,
    include_probes: bool = False,
    history: list[dict] | None = None,
) -> DriftResult:
    """Check the window's traffic; write the outputs to output_dir and emit the metrics.
    `history` lists the stage's earlier runs for the report (see `report.render_report`)."""
    window = window or Window()
    baseline = load_baseline(statistics_path, constraints_path)
    names = feature_names or baseline.names
    unknown = [n for n in names if n not in baseline.names]
    if unknown:
        raise DriftCheckError(f"features {unknown} are not in the baseline {baseline.names}")
    capture, refusals = load_traffic(source, window, model_version, include_probes)
    comparison = Comparison(baseline, len(names))
    features, rows = [], []
    if capture.rows:
        rows = comparison.column_counts(capture.rows, names)
        frame = pd.DataFrame(rows, columns=names, dtype=object)
        features = [comparison.feature(name, frame[name]) for name in names]
    total = len(capture.rows) + refusals.rows
    lines = refusals.lines(total)
    if refusals.rows > max_refused_share * total:
        worst = max(refusals.problems, key=refusals.problems.get, default=(None, None, None))
        comparison.violate(worst[1] or "*", "refused_requests_check",
                           f"{refusals.rows} of {total} rows ({refusals.rows / total:.1%}) came "
                           f"in {refusals.requests} refused requests, more than the "
                           f"{max_refused_share:.1%} allowed: {'; '.join(lines[:3])}")
    counts = {"files": capture.files, "lines": capture.lines,
              "invalid_lines": capture.invalid_lines, "invalid_bodies": capture.invalid_bodies,
              "outside_window": capture.outside_window, "rows": len(capture.rows),
              "rows_checked": len(rows), "invalid_examples": capture.examples,
              "probes": capture.probes + refusals.probes,
              "refused_requests": refusals.requests, "refused_rows": refusals.rows}
    window_doc = {"start": window.start.isoformat() if window.start else None,
                  "end": window.end.isoformat() if window.end else None,
                  "source": source.name}
    result = DriftResult(overall_verdict(features, comparison.violations), features,
                         comparison.violations, counts, window_doc, refusals=lines,
                         refused=refusals.by_feature(), time=datetime.now(UTC).isoformat())
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "constraint_violations.json",
                   {"violations": comparison.violations})
        write_json(output_dir / "drift_metrics.json", drift_metrics(result))
        (output_dir / "report.html").write_text(render_report(result, history))
        result.output_dir = output_dir
    if metrics_sink is not None:
        metrics_sink(metric_data(result))
    return result


# ---------------------------------------------------------------------------- Processing job


def cloudwatch_sink(client, namespace: str, dimensions: list[dict]) -> MetricSink:
    def put(data: list[dict]) -> None:
        stamped = [{**datum, "Dimensions": dimensions} for datum in data]
        for start in range(0, len(stamped), 20):
            client.put_metric_data(Namespace=namespace, MetricData=stamped[start:start + 20])
    return put


def _dimension(text: str) -> dict:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise DriftCheckError(f"--metric-dimension {text!r} is not Name=Value")
    return {"Name": name, "Value": value}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--capture-uri", help="s3://... capture prefix of one model version")
    where.add_argument("--capture-dir", type=Path, help="local copy of that prefix")
    parser.add_argument("--baseline-statistics", type=Path, required=True)
    parser.add_argument("--baseline-constraints", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=Path("/opt/ml/processing/output"))
    parser.add_argument("--start", type=parse_time, help="ISO 8601, inclusive")
    parser.add_argument("--end", type=parse_time, help="ISO 8601, exclusive")
    parser.add_argument("--model-version", type=int)
    parser.add_argument("--max-refused-share", type=float, default=DEFAULT_MAX_REFUSED_SHARE,
                        help="fail above this share of rows in refused requests")
    parser.add_argument("--include-probes", action="store_true",
                        help="check the staging gate's requests (mlops-gate-...) too")
    parser.add_argument("--feature-names", help="comma-separated; default: the baseline's")
    parser.add_argument("--metric-namespace", help="emit CloudWatch metrics to this namespace")
    parser.add_argument("--metric-dimension", action="append", default=[], type=_dimension,
                        help="Name=Value, repeatable (e.g. Endpoint=abalone-prod)")
    parser.add_argument("--history-uri",
                        help="s3://... the stage's monitoring prefix: earlier runs for the report")
    parser.add_argument("--region")
    return parser.parse_args(argv)


def job_failed(check: str, err: Exception) -> int:
    """End a monitoring job: the error in /opt/ml/output/message when run as a Processing job
    (SageMaker shows it as the failure reason), and on stderr; the exit code."""
    message = Path(os.environ.get("MLOPS_OPT_ML", "/opt/ml")) / "output" / "message"
    if message.parent.is_dir():
        message.write_text(str(err))
    print(f"{check} failed: {err}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        session = None
        if args.capture_uri or args.metric_namespace or args.history_uri:
            import boto3  # only the cloud job talks to AWS

            session = boto3.session.Session(region_name=args.region)
        source = (S3Source(session.client("s3"), args.capture_uri) if args.capture_uri
                  else DirectorySource(args.capture_dir))
        sink = (cloudwatch_sink(session.client("cloudwatch"), args.metric_namespace,
                                args.metric_dimension) if args.metric_namespace else None)
        names = args.feature_names.split(",") if args.feature_names else None
        earlier = (read_history(S3Source(session.client("s3"), args.history_uri))
                   if args.history_uri else None)
        result = run(source, args.baseline_statistics, args.baseline_constraints, args.output,
                     Window(args.start, args.end), args.model_version, names, sink,
                     args.max_refused_share, args.include_probes, earlier)
    except DriftCheckError as err:
        return job_failed("drift check", err)
    print(f"{result.verdict}: {result.counts['rows_checked']} rows checked, "
          f"{len(result.violations)} violation(s); report {result.report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
