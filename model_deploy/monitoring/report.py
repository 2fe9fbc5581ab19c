"""The drift check's HTML report: a summary, the violations table, one section per feature, the
model quality over time and the stage's earlier reports.

Hand-written SVG keeps the report self-contained and the Processing job free of plotting
libraries: numeric features show baseline and current CDFs (the drift distance is their largest
vertical gap), categorical features show category frequencies side by side, with the values the
endpoint refused as extra bars; each feature's refused rows are listed under its chart. The
earlier runs come as `mlops_local.monitor.history` lists them (kind, time, verdict, window,
relative_path under the stage's monitoring prefix, summary); the report links them by that
path from its own folder, `<stage prefix>/<stamp>/report.html`.
"""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 420, 220, 36
BASELINE_COLOUR, CURRENT_COLOUR, REFUSED_COLOUR = "#1f77b4", "#d62728", "#9467bd"
TEST_COLOUR, BOUND_COLOUR = "#2ca02c", "#ff7f0e"
VERDICT_COLOUR = {"ok": "#2ca02c", "drift": "#d62728", "inconclusive": "#ff7f0e",
                  "not compared": "#7f7f7f", "no drift": "#2ca02c", "violations": "#d62728",
                  "violation": "#d62728"}


def _scale(value: float, low: float, high: float, start: float, end: float) -> float:
    span = (high - low) or 1.0
    return start + (value - low) / span * (end - start)


def _frame(title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<rect x="{PAD}" y="{PAD / 2}" width="{WIDTH - 1.5 * PAD}" '
        f'height="{HEIGHT - 1.5 * PAD}" fill="none" stroke="#ccc"/>',
        f'<text x="{PAD}" y="12" font-size="12">{escape(title)}</text>',
    ]


def _legend(*entries: tuple[str, str]) -> str:
    entries = entries or (("baseline", BASELINE_COLOUR), ("current", CURRENT_COLOUR))
    start = WIDTH / 2 - 45 * len(entries)
    return "".join(f'<text x="{start + 90 * index}" y="{HEIGHT - 6}" font-size="11" '
                   f'fill="{colour}">{label}</text>'
                   for index, (label, colour) in enumerate(entries))


def cdf_svg(title: str, plot: dict) -> str:
    curves = [plot["baseline"]] + ([plot["current"]] if "current" in plot else [])
    xs = [x for curve in curves for x, _ in curve]
    low, high = min(xs), max(xs)
    left, right, top, bottom = PAD, WIDTH - PAD / 2, PAD / 2, HEIGHT - PAD

    def polyline(curve: list[list[float]], colour: str) -> str:
        points, previous = [], 0.0
        for x, y in curve:  # a step function: rise vertically at each value
            sx = _scale(x, low, high, left, right)
            points += [f"{sx:.1f},{_scale(previous, 0, 1, bottom, top):.1f}",
                       f"{sx:.1f},{_scale(y, 0, 1, bottom, top):.1f}"]
            previous = y
        return (f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                f'points="{" ".join(points)}"/>')

    parts = _frame(title) + [_legend()]
    parts += [polyline(curve, colour) for curve, colour in
              zip(curves, (BASELINE_COLOUR, CURRENT_COLOUR), strict=False)]
    if "at" in plot:
        sx = _scale(plot["at"], low, high, left, right)
        parts.append(f'<line x1="{sx:.1f}" x2="{sx:.1f}" y1="{top}" y2="{bottom}" '
                     'stroke="#555" stroke-dasharray="3,3"/>')
    parts += [f'<text x="{left}" y="{HEIGHT - 20}" font-size="10">{low:.4g}</text>',
              f'<text x="{right}" y="{HEIGHT - 20}" font-size="10" text-anchor="end">'
              f"{high:.4g}</text>", "</svg>"]
    return "".join(parts)


def bars_svg(title: str, plot: dict, refused: dict[str, int] | None = None, sent: int = 0
             ) -> str:
    """Baseline and current shares per category; `refused` values (value -> rows the endpoint
    refused for it, of `sent` rows) as a third bar with its count."""
    current, refused = plot.get("current", {}), refused or {}
    refused_shares = {value: rows / max(sent, 1) for value, rows in refused.items()}
    categories = sorted(set(plot["baseline"]) | set(current))
    categories += [value for value in refused if value not in categories]
    top_value = max([*plot["baseline"].values(), *current.values(), *refused_shares.values(),
                     1e-9])
    left, right, top, bottom = PAD, WIDTH - PAD / 2, PAD / 2, HEIGHT - PAD
    slot = (right - left) / len(categories)
    series = [(plot["baseline"], BASELINE_COLOUR), (current, CURRENT_COLOUR)]
    legend = [("baseline", BASELINE_COLOUR), ("current", CURRENT_COLOUR)]
    if refused:
        series.append((refused_shares, REFUSED_COLOUR))
        legend.append(("refused", REFUSED_COLOUR))
    width = 0.8 / len(series)
    parts = _frame(title) + [_legend(*legend)]
    for index, category in enumerate(categories):
        for offset, (shares, colour) in enumerate(series):
            if category not in shares:
                continue
            share = shares[category]
            height = _scale(share, 0, top_value, 0, bottom - top)
            x = left + (index + 0.1 + width * offset) * slot
            tip = (f"{_rows(refused[category])} refused" if colour == REFUSED_COLOUR
                   else f"{share:.3f}")
            parts.append(f'<rect x="{x:.1f}" y="{bottom - height:.1f}" '
                         f'width="{slot * width * 0.9:.1f}" height="{height:.1f}" '
                         f'fill="{colour}"><title>{escape(category)}: {tip}</title></rect>')
            if colour == REFUSED_COLOUR:
                parts.append(f'<text x="{x + slot * width * 0.45:.1f}" '
                             f'y="{bottom - height - 3:.1f}" font-size="10" text-anchor="middle"'
                             f' fill="{REFUSED_COLOUR}">{refused[category]}</text>')
        parts.append(f'<text x="{left + (index + 0.5) * slot:.1f}" y="{HEIGHT - 20}" '
                     f'font-size="10" text-anchor="middle">{escape(category)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def quality_svg(runs: list[dict]) -> str:
    """RMSE per model-quality run that has one, oldest first, with the model's test RMSE and
    the tolerance bound as dashed reference lines (per run: a new model version moves them)."""
    lines = {"rmse": CURRENT_COLOUR, "test_rmse": TEST_COLOUR, "rmse_threshold": BOUND_COLOUR}
    high = max(run["summary"][key] for run in runs for key in lines) * 1.1
    left, right, top, bottom = PAD, WIDTH - PAD / 2, PAD / 2, HEIGHT - PAD

    def x(index: int) -> float:
        return (left + right) / 2 if len(runs) == 1 else _scale(index, 0, len(runs) - 1,
                                                                left + 10, right - 10)

    def y(value: float) -> float:
        return _scale(value, 0, high, bottom, top)

    parts = _frame("model quality: RMSE per run") + [_legend(
        ("rmse", CURRENT_COLOUR), ("test rmse", TEST_COLOUR), ("tolerance", BOUND_COLOUR))]
    for key, colour in lines.items():
        points = " ".join(f"{x(i):.1f},{y(run['summary'][key]):.1f}" for i, run in enumerate(runs))
        dash = "" if key == "rmse" else ' stroke-dasharray="4,3"'
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} '
                     f'points="{points}"/>')
    parts += [f'<circle cx="{x(i):.1f}" cy="{y(run["summary"]["rmse"]):.1f}" r="3" '
              f'fill="{CURRENT_COLOUR}"><title>{escape(run["time"])}: rmse '
              f'{run["summary"]["rmse"]:.4f}</title></circle>' for i, run in enumerate(runs)]
    parts += [f'<text x="{left + 2}" y="{top + 10}" font-size="10">{high:.4g}</text>',
              f'<text x="{left + 2}" y="{bottom - 2}" font-size="10">0</text>',
              f'<text x="{left}" y="{HEIGHT - 20}" font-size="10">'
              f'{escape(runs[0]["time"][:16])}</text>',
              f'<text x="{right}" y="{HEIGHT - 20}" font-size="10" text-anchor="end">'
              f'{escape(runs[-1]["time"][:16])}</text>', "</svg>"]
    return "".join(parts)


def _rows(count: int) -> str:
    return f"{count} row{'' if count == 1 else 's'}"


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _window(window: dict) -> str:
    return f"{window.get('start') or 'start'} to {window.get('end') or 'end'}"


def _verdict(verdict: str) -> str:
    return f'<td style="color:{VERDICT_COLOUR.get(verdict, "#000")}">{escape(verdict)}</td>'


def _link(run: dict, label: str) -> str:
    if not run.get("report_path") or not run.get("relative_path"):
        return "-"
    return f'<a href="../{escape(run["relative_path"])}">{label}</a>'


def refusal_line(problem: dict) -> str:
    """One feature's refused rows: "34 rows refused: unknown category 'X'"."""
    value = problem["value"]
    shown = f" {value!r}" if value is not None and problem["feature"] is not None else ""
    return f"{_rows(problem['rows'])} refused: {problem['reason']}{shown}"


def feature_section(check, refused: list[dict], sent: int) -> str:
    """A feature's chart (its refused unknown categories as extra bars) and refused rows."""
    title = (f"{check.name}: distance {_number(check.distance)}, threshold "
             f"{_number(check.threshold)}")
    mine = [p for p in refused if p["feature"] == check.name]
    if check.plot.get("kind") == "cdf":
        chart = cdf_svg(title, check.plot)
    else:
        unknown = {str(p["value"]): p["rows"] for p in mine
                   if p["reason"] == "unknown category" and p["value"] is not None}
        chart = bars_svg(title, check.plot, unknown, sent)
    lines = "".join(f"<li>{escape(refusal_line(p))}</li>" for p in mine)
    listed = f"<ul>{lines}</ul>" if lines else "<p>no rows refused</p>"
    return (f'<section id="feature-{escape(check.name)}"><h3>{escape(check.name)}</h3>'
            f"{chart}{listed}</section>")


def history_section(runs: list[dict]) -> str:
    """The stage's earlier data-quality reports, newest first, linked."""
    rows = "".join(
        f"<tr><td>{escape(run['time'])}</td><td>{escape(_window(run['window']))}</td>"
        f"<td>{run['summary']['rows_checked']}</td>{_verdict(run['verdict'])}"
        f"<td>{run['summary']['refused_share']:.1%}</td><td>{_link(run, 'report')}</td></tr>"
        for run in runs
    ) or '<tr><td colspan="6">no earlier report</td></tr>'
    return ("<table><tr><th>time</th><th>window</th><th>rows checked</th><th>verdict</th>"
            f"<th>refused share</th><th>report</th></tr>{rows}</table>")


def quality_section(runs: list[dict]) -> str:
    """The model-quality runs: the RMSE chart (oldest left) and a table, newest first."""
    if not runs:
        return "<p>no model-quality run yet</p>"
    rows = "".join(
        f"<tr><td>{escape(run['time'])}</td><td>{escape(_window(run['window']))}</td>"
        f"<td>{s['rows_compared']}</td><td>{_number(s['rmse'])}</td><td>{_number(s['mae'])}</td>"
        f"<td>{_number(s['r2'])}</td><td>{_number(s['test_rmse'])}</td>"
        f"<td>{_number(s['rmse_threshold'])}</td>{_verdict(run['verdict'])}"
        f"<td>{_link(run, 'model_quality.json')}</td></tr>"
        for run in runs for s in [run["summary"]]
    )
    compared = [run for run in runs if run["summary"]["rmse"] is not None]
    chart = quality_svg(compared[::-1]) if compared else ""
    return (f"{chart}<table><tr><th>time</th><th>window</th><th>rows compared</th><th>rmse</th>"
            "<th>mae</th><th>r2</th><th>test rmse</th><th>tolerance bound</th><th>verdict</th>"
            f"<th>details</th></tr>{rows}</table>")


def render_report(result, history: list[dict] | None = None) -> str:
    """The whole report for a drift_check.DriftResult, as one HTML document; `history` lists
    the stage's earlier runs, newest first (None: the runner has none to give)."""
    rows = "".join(
        f"<tr><td>{escape(f.name)}</td><td>{f.inferred_type}</td><td>{_number(f.distance)}</td>"
        f"<td>{_number(f.threshold)}</td><td>{f.completeness:.3f}</td><td>{f.records}</td>"
        f"{_verdict(f.verdict)}<td>{', '.join(f.checks) or '-'}</td></tr>"
        for f in result.features
    )
    violations = "".join(
        f"<tr><td>{escape(v['feature_name'])}</td><td>{v['constraint_check_type']}</td>"
        f"<td>{escape(v['description'])}</td></tr>"
        for v in result.violations
    ) or '<tr><td colspan="3">none</td></tr>'
    counts = result.counts
    sent = counts["rows"] + counts["refused_rows"]
    sections = "".join(feature_section(f, result.refused, sent) for f in result.features)
    window = result.window
    refusals = "".join(f"<li>{escape(line)}</li>" for line in result.refusals) or "<li>none</li>"
    if history is None:
        over_time = "<p>This run was given no history of the stage's earlier runs.</p>"
    else:
        over_time = (
            "<h2>Model quality over time</h2>"
            f"{quality_section([r for r in history if r['kind'] == 'model quality'])}"
            "<h2>Earlier reports</h2>"
            f"{history_section([r for r in history if r['kind'] == 'data quality'])}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift check: {result.verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}svg{{margin:6px}}</style>
</head><body>
<h1>Drift check: {result.verdict}</h1>
<p>Capture {escape(str(window['source']))}, window {window['start'] or 'start'} to
{window['end'] or 'end'}: {counts['rows_checked']} rows checked from {counts['lines']} lines in
{counts['files']} files; {counts['invalid_lines']} invalid lines, {counts['invalid_bodies']}
unreadable bodies, {counts['outside_window']} records outside the window;
{counts['probes']} gate probes left out.</p>
<h2>Refused requests</h2>
<p>{counts['refused_requests']} requests with {counts['refused_rows']} rows were refused (a request
with one bad row is refused whole); the bad rows:</p>
<ul>{refusals}</ul>
<h2>Features</h2>
<table><tr><th>feature</th><th>type</th><th>distance</th><th>threshold</th>
<th>completeness</th><th>values</th><th>distribution</th><th>violations</th></tr>{rows}</table>
<h2>Violations</h2>
<table><tr><th>feature</th><th>check</th><th>description</th></tr>{violations}</table>
<h2>Distributions and refusals</h2>
<div>{sections}</div>
{over_time}
</body></html>
"""
