"""The drift check's HTML report: a summary, the violations table and one inline SVG per feature.

Hand-written SVG keeps the report self-contained and the Processing job free of plotting
libraries: numeric features show baseline and current CDFs (the drift distance is their largest
vertical gap), categorical features show category frequencies side by side.
"""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 420, 220, 36
BASELINE_COLOUR, CURRENT_COLOUR = "#1f77b4", "#d62728"
VERDICT_COLOUR = {"ok": "#2ca02c", "drift": "#d62728", "inconclusive": "#ff7f0e",
                  "not compared": "#7f7f7f"}


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


def _legend() -> str:
    return (f'<text x="{WIDTH / 2 - 60}" y="{HEIGHT - 6}" font-size="11" '
            f'fill="{BASELINE_COLOUR}">baseline</text><text x="{WIDTH / 2 + 10}" '
            f'y="{HEIGHT - 6}" font-size="11" fill="{CURRENT_COLOUR}">current</text>')


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


def bars_svg(title: str, plot: dict) -> str:
    current = plot.get("current", {})
    categories = sorted(set(plot["baseline"]) | set(current))
    top_value = max([*plot["baseline"].values(), *current.values(), 1e-9])
    left, right, top, bottom = PAD, WIDTH - PAD / 2, PAD / 2, HEIGHT - PAD
    slot = (right - left) / len(categories)
    parts = _frame(title) + [_legend()]
    for index, category in enumerate(categories):
        for offset, (shares, colour) in enumerate(((plot["baseline"], BASELINE_COLOUR),
                                                    (current, CURRENT_COLOUR))):
            share = shares.get(category, 0.0)
            height = _scale(share, 0, top_value, 0, bottom - top)
            x = left + index * slot + slot * (0.15 + 0.35 * offset)
            parts.append(f'<rect x="{x:.1f}" y="{bottom - height:.1f}" width="{slot * 0.33:.1f}"'
                         f' height="{height:.1f}" fill="{colour}"><title>{escape(category)}: '
                         f"{share:.3f}</title></rect>")
        parts.append(f'<text x="{left + (index + 0.5) * slot:.1f}" y="{HEIGHT - 20}" '
                     f'font-size="10" text-anchor="middle">{escape(category)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_report(result) -> str:
    """The whole report for a drift_check.DriftResult, as one HTML document."""
    rows = "".join(
        f"<tr><td>{escape(f.name)}</td><td>{f.inferred_type}</td><td>{_number(f.distance)}</td>"
        f"<td>{_number(f.threshold)}</td><td>{f.completeness:.3f}</td><td>{f.records}</td>"
        f'<td style="color:{VERDICT_COLOUR.get(f.verdict, "#000")}">{f.verdict}</td>'
        f"<td>{', '.join(f.checks) or '-'}</td></tr>"
        for f in result.features
    )
    violations = "".join(
        f"<tr><td>{escape(v['feature_name'])}</td><td>{v['constraint_check_type']}</td>"
        f"<td>{escape(v['description'])}</td></tr>"
        for v in result.violations
    ) or '<tr><td colspan="3">none</td></tr>'
    plots = "".join(
        (cdf_svg if f.plot.get("kind") == "cdf" else bars_svg)(
            f"{f.name}: distance {_number(f.distance)}, threshold {_number(f.threshold)}", f.plot)
        for f in result.features
    )
    counts = result.counts
    window = result.window
    refusals = "".join(f"<li>{escape(line)}</li>" for line in result.refusals) or "<li>none</li>"
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
<h2>Distributions</h2>
<div>{plots}</div>
</body></html>
"""
