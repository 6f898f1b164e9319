"""The HTML page of `guardrail batch profile`: the groups' value profiles side by side.

One radar chart lays every group's mean scores over each other (with their confidence bands),
then one radar per group shows its own profile with the share of responses opposing each value,
and a table gives every number with its interval. The radar is the audit report's
(``guardrail.report.radar``); the page is one self-contained file (PNGs embedded as base64).
"""

from __future__ import annotations

import html
from typing import Any

from guardrail.report import MEAN_LABEL, RadarSeries, radar
from guardrail.values import VALUE_NAMES

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.grid img { width: 340px; } img { max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; }
td, th { padding: 0.2rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
.ci { color: #777; font-size: 0.8em; }
"""


def _series(group: str, data: dict[str, Any], label: str, with_opposed: bool) -> RadarSeries:
    values = data["values"]
    return RadarSeries(
        label=label,
        mean={v: values[v]["mean"] for v in VALUE_NAMES},
        low={v: values[v]["mean_ci"][0] for v in VALUE_NAMES},
        high={v: values[v]["mean_ci"][1] for v in VALUE_NAMES},
        opposed_share={v: values[v]["opposing"] for v in VALUE_NAMES} if with_opposed else None,
    )


def _cell(entry: dict[str, Any], name: str, percent: bool) -> str:
    low, high = entry[f"{name}_ci"]
    if percent:
        return f"{entry[name]:.1%} <span class=ci>[{low:.1%}, {high:.1%}]</span>"
    return f"{entry[name]:+.3f} <span class=ci>[{low:+.3f}, {high:+.3f}]</span>"


def _table(result: dict[str, Any]) -> str:
    groups = list(result["groups"])
    head = "".join(f'<th colspan="3">{html.escape(g)} (n={result["groups"][g]["n"]})</th>' for g in groups)
    sub = "<th>mean score</th><th>opposing</th><th>supporting</th>" * len(groups)
    rows = []
    for value in VALUE_NAMES:
        cells = []
        for g in groups:
            entry = result["groups"][g]["values"][value]
            cells += [_cell(entry, "mean", False), _cell(entry, "opposing", True), _cell(entry, "supporting", True)]
        rows.append(f"<tr><td>{value}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr><th></th>{head}</tr><tr><th>value</th>{sub}</tr>{''.join(rows)}</table>"


def _single(group: str, data: dict[str, Any]) -> str:
    chart = radar([_series(group, data, MEAN_LABEL, True)], title=f"{group} (n={data['n']})")
    return f'<img alt="radar chart of the value profile of {html.escape(group)}" src="data:image/png;base64,{chart}">'


def build_profile_report(result: dict[str, Any]) -> str:
    """The HTML page for a profile (as ``guardrail.batch.profile.profile`` returns it)."""
    import matplotlib

    matplotlib.use("Agg")
    groups = result["groups"]
    by = result["by"]
    overlay = radar(
        [_series(g, d, f"{g} (n={d['n']})", False) for g, d in groups.items()],
        title=f"Mean score by {by}" if by else "Mean score",
    )
    singles = "\n".join(_single(g, d) for g, d in groups.items())
    level = f"{result['confidence']:.0%}"
    sources = ", ".join(html.escape(s) for s in result["sources"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>guardrail value profile</title>
<style>{STYLE}</style></head><body>
<h1>Value profile</h1>
<p><b>Scores:</b> {sources}<br><b>Grouped by:</b> {html.escape(str(by)) if by else "(one group)"}
({len(groups)} groups, {result["lines"]} scored lines; {result["error_lines"]} error lines left out)<br>
<b>Intervals:</b> {level} percentile bootstrap, {result["resamples"]} resamples (seed {result["seed"]});
bands on the charts are the mean score's interval.</p>
<img alt="radar chart comparing the groups' mean scores" src="data:image/png;base64,{overlay}">
<h2>Each group</h2>
<div class="grid">
{singles}
</div>
<h2>Numbers</h2>
<p>Mean score in [-1, 1]; opposing and supporting: the share of responses the scorer labels as
opposing (-1) or supporting (+1) the value. In brackets: the {level} interval.</p>
{_table(result)}
</body></html>
"""
