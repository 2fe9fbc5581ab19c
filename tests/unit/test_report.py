"""The drift check's HTML report as a person reads it: each feature's refusals beside its chart,
the model quality over time and the stage's earlier reports."""

from __future__ import annotations

import re
from pathlib import Path

from model_deploy.monitoring import report
from model_deploy.monitoring.drift_check import DriftResult, FeatureCheck

COUNTS = {"files": 1, "lines": 100, "invalid_lines": 0, "invalid_bodies": 0, "outside_window": 0,
          "probes": 0, "rows": 400, "rows_checked": 400, "refused_requests": 3,
          "refused_rows": 100}
REFUSED = [{"reason": "unknown category", "feature": "sex", "value": "X", "rows": 34},
           {"reason": "not a number", "feature": "length", "value": "abc", "rows": 3},
           {"reason": "wrong column count", "feature": None, "value": 7, "rows": 2}]


def result(refused: list[dict] = ()) -> DriftResult:
    sex = FeatureCheck("sex", "String", 0.02, 0.1, 0.1, "Robust", "ok", [], 1.0, 400,
                       {"kind": "bars", "baseline": {"F": 0.3, "I": 0.3, "M": 0.4},
                        "current": {"F": 0.25, "I": 0.25, "M": 0.5}})
    length = FeatureCheck("length", "Fractional", 0.03, 0.1, 0.1, "Robust", "ok", [], 1.0, 400,
                          {"kind": "cdf", "baseline": [[0.1, 0.5], [0.5, 1.0]],
                           "current": [[0.2, 0.5], [0.6, 1.0]], "at": 0.3})
    return DriftResult("no drift", [sex, length], [], COUNTS,
                       {"start": None, "end": None, "source": "s3://b/capture/v1"},
                       refused=list(refused))


def section(html: str, feature: str) -> str:
    return re.search(rf'<section id="feature-{feature}">(.*?)</section>', html).group(1)


def data_run(stamp: str, verdict: str, rows: int, share: float, written: bool = True) -> dict:
    return {"kind": "data quality", "time": f"2026-11-{stamp[6:8]}T{stamp[9:11]}:00:00+00:00",
            "verdict": verdict, "window": {"start": None, "end": None},
            "report_path": Path(f"/s3/{stamp}/report.html") if written else None,
            "uri": f"s3://b/p/monitoring/staging/{stamp}/report.html",
            "relative_path": f"{stamp}/report.html",
            "summary": {"rows_checked": rows, "refused_rows": 0, "refused_share": share}}


def quality_run(stamp: str, rmse: float | None, verdict: str = "ok") -> dict:
    return {"kind": "model quality", "time": f"2026-11-{stamp[6:8]}T{stamp[9:11]}:00:00+00:00",
            "verdict": verdict, "window": {"start": "2026-11-23T00:00:00+00:00", "end": None},
            "report_path": Path(f"/s3/model-quality/{stamp}/model_quality.json"),
            "uri": f"s3://b/p/monitoring/staging/model-quality/{stamp}/model_quality.json",
            "relative_path": f"model-quality/{stamp}/model_quality.json",
            "summary": {"rows_compared": 50, "rmse": rmse, "mae": rmse and rmse * 0.8,
                        "r2": rmse and 1 - rmse / 10, "test_rmse": 2.0, "rmse_threshold": 2.4}}


def test_each_feature_shows_its_refused_rows_and_unknown_values_as_bars():
    html = report.render_report(result(REFUSED), [])
    sex, length = section(html, "sex"), section(html, "length")
    bar = re.search(rf'<rect [^>]*fill="{report.REFUSED_COLOUR}"><title>X: 34 rows refused</title>',
                    sex)
    assert bar, sex
    assert f'fill="{report.REFUSED_COLOUR}">34</text>' in sex
    assert ">refused</text>" in sex  # the legend names the third colour
    assert "<li>34 rows refused: unknown category &#x27;X&#x27;</li>" in sex
    assert "<li>3 rows refused: not a number &#x27;abc&#x27;</li>" in length
    assert report.REFUSED_COLOUR not in length  # a CDF has no refused bars, only the line
    assert "wrong column count" not in sex + length  # a row's shape is no feature's
    assert "no rows refused" in section(report.render_report(result(), []), "sex")


def test_earlier_reports_are_listed_newest_first_and_linked():
    runs = [data_run("20261125T100000000000Z", "drift", 300, 0.25),
            data_run("20261124T090000000000Z", "no drift", 200, 0.0, written=False),
            data_run("20261123T080000000000Z", "no drift", 100, 0.0)]
    html = report.render_report(result(), runs)
    table = html.split("<h2>Earlier reports</h2>")[1]
    rows = re.findall(r"<tr><td>(2026-11-\d\dT\d\d)[^<]*</td>(.*?)</tr>", table)
    assert [time for time, _ in rows] == ["2026-11-25T10", "2026-11-24T09", "2026-11-23T08"]
    assert "<td>300</td>" in rows[0][1] and "<td>25.0%</td>" in rows[0][1]
    assert ">drift</td>" in rows[0][1]
    assert '<a href="../20261125T100000000000Z/report.html">report</a>' in rows[0][1]
    assert rows[1][1].endswith("<td>-</td>")  # its report.html is gone: no dead link
    assert "start to end" in rows[2][1]


def test_model_quality_over_time_is_a_chart_with_reference_lines_and_a_table():
    runs = [quality_run("20261125T100000000000Z", 2.6, "violation"),
            data_run("20261124T093000000000Z", "no drift", 200, 0.0),
            quality_run("20261124T090000000000Z", None, "not compared"),
            quality_run("20261123T080000000000Z", 1.9)]
    html = report.render_report(result(), runs)
    part = html.split("<h2>Model quality over time</h2>")[1].split("<h2>")[0]
    chart = re.search(r"<svg .*?</svg>", part).group(0)
    assert 'aria-label="model quality: RMSE per run"' in chart
    assert chart.count("<polyline") == 3  # rmse, test rmse, tolerance bound
    for colour in (report.TEST_COLOUR, report.BOUND_COLOUR):
        assert f'stroke="{colour}" stroke-width="1.5" stroke-dasharray' in chart
    points = re.findall(r"<title>([^<]*)</title></circle>", chart)
    assert points == ["2026-11-23T08:00:00+00:00: rmse 1.9000",
                      "2026-11-25T10:00:00+00:00: rmse 2.6000"]  # oldest left; none unplotted
    table = part.split("</svg>")[1]
    assert table.index("2026-11-25T10") < table.index("2026-11-24T09") < table.index(
        "2026-11-23T08")
    assert "<td>2.6000</td><td>2.0800</td><td>0.7400</td><td>2.0000</td><td>2.4000</td>" in table
    assert ">violation</td>" in table and ">not compared</td>" in table
    assert ('<a href="../model-quality/20261125T100000000000Z/model_quality.json">'
            in table)
    assert "20261124T0930" not in part  # data-quality runs go to the earlier reports


def test_without_a_history_the_report_says_so():
    html = report.render_report(result())
    assert "given no history" in html and "Earlier reports" not in html
    empty = report.render_report(result(), [])
    assert "no model-quality run yet" in empty and "no earlier report" in empty
