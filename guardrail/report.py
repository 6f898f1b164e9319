"""`guardrail audit report`: a self-contained HTML page about one audit log, on any store.

The deployment's value profile as a radar chart (the ten values around the Schwartz circle),
violations per value over time, and action counts. Charts are matplotlib PNGs embedded as
base64, so the page is one file with no network references.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardrail.audit import AuditStore, records, stats, verify
from guardrail.audit.questions import bucket
from guardrail.audit.targets import opened
from guardrail.values import CIRCUMPLEX_ANGLE, VALUE_NAMES

# Circle order for the radar: SD ST HE AC PO SE CO TR BE UN (conformity and tradition share a wedge).
CIRCLE = sorted(VALUE_NAMES, key=lambda v: (CIRCUMPLEX_ANGLE[v], v != "conformity"))
ACTION_COLORS = {"allow": "#4c9f70", "log": "#e0b040", "rewrite": "#4a7bd0", "block": "#c8483c"}


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


RADAR_COLORS = ("#4a7bd0", "#c8483c", "#4c9f70", "#e0b040", "#8e5ea2", "#3fa7b5", "#d17a2c", "#6b6b6b")
MEAN_LABEL = "mean score (-1 opposes, 0 unrelated, +1 supports)"


@dataclass(frozen=True)
class RadarSeries:
    """One line on a radar chart: the mean score per value, optionally a band around it (``low`` to
    ``high``, e.g. a confidence interval) and the share of responses opposing each value."""

    label: str
    mean: dict[str, float]
    opposed_share: dict[str, float] | None = None
    low: dict[str, float] | None = None
    high: dict[str, float] | None = None


def radar(series: Sequence[RadarSeries], title: str = "Value profile (Schwartz circle)") -> str:
    """A radar chart (PNG, base64) of one or more value profiles around the Schwartz circle."""
    import matplotlib.pyplot as plt

    angles = [2 * math.pi * i / len(CIRCLE) for i in range(len(CIRCLE))]
    closed = [*angles, angles[0]]

    def ring(values: dict[str, float]) -> list[float]:
        return [*(values[v] for v in CIRCLE), values[CIRCLE[0]]]

    fig = plt.figure(figsize=(5.6, 5.6))
    ax = fig.add_subplot(polar=True)
    opposed_label = "share of responses opposing (drawn inward from 0)"
    for i, line in enumerate(series):
        color = RADAR_COLORS[i % len(RADAR_COLORS)]
        ax.plot(closed, ring(line.mean), color=color, linewidth=2, label=line.label)
        if line.low is not None and line.high is not None:
            ax.fill_between(closed, ring(line.low), ring(line.high), color=color, alpha=0.18)
        elif len(series) == 1:
            ax.fill(closed, ring(line.mean), color=color, alpha=0.12)
        share = line.opposed_share or {}
        opposed = [(a, -share[v]) for a, v in zip(angles, CIRCLE, strict=True) if share.get(v, 0) > 0]
        if opposed:
            ax.scatter(
                [a for a, _ in opposed],
                [r for _, r in opposed],
                color="#c8483c" if len(series) == 1 else color,
                s=40,
                zorder=3,
                label=opposed_label,
            )
            opposed_label = "_"  # one legend entry for the dots of every series
    ax.plot(closed, [0.0] * len(closed), color="#555555", linewidth=1, linestyle="--")
    ax.set_xticks(angles)
    ax.set_xticklabels([v.replace("_", "-") for v in CIRCLE], fontsize=9)
    ax.set_ylim(-1, 1)
    ax.set_yticks([-1, -0.5, 0, 0.5, 1])
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, pad=18)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=8, frameon=False)
    out = _png(fig)
    plt.close(fig)
    return out


def _violations_over_time(by_window: dict[str, Counter[str]]) -> tuple[str, list[str]]:
    """The chart (PNG, base64) and the dimensions it shows, in the order of its legend."""
    import matplotlib.pyplot as plt

    windows = sorted(by_window)
    seen = {dim for w in windows for dim, n in by_window[w].items() if n}
    # The ten values in circle order, then what group and target rules name ("self_enhancement", "target").
    values = [v for v in CIRCLE if v in seen] + sorted(seen - set(CIRCLE))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    bottom = [0] * len(windows)
    cmap = plt.get_cmap("tab10")
    for i, value in enumerate(values):
        counts = [by_window[w][value] for w in windows]
        ax.bar(windows, counts, bottom=bottom, label=value.replace("_", "-"), color=cmap(i % 10), width=0.5)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_ylabel("violations")
    ax.set_title("Violations per value (or group, or target) over time")
    if values:
        ax.legend(fontsize=8, ncol=2, frameon=False)
    else:
        ax.text(0.5, 0.5, "no violations recorded", ha="center", va="center", transform=ax.transAxes)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    out = _png(fig)
    plt.close(fig)
    return out, values


def _actions(by_action: dict[str, int]) -> str:
    import matplotlib.pyplot as plt

    names = [a for a in ("allow", "log", "rewrite", "block") if a in by_action]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(names, [by_action[a] for a in names], color=[ACTION_COLORS[a] for a in names])
    ax.set_title("Actions taken")
    ax.set_ylabel("decisions")
    out = _png(fig)
    plt.close(fig)
    return out


def _score_vector(scores: Any) -> dict[str, tuple[float, Any]] | None:
    """(score, label) per value of a record's ``scores``; None when a value is missing or not a number."""
    if not isinstance(scores, dict) or not isinstance(scores.get("scores"), dict):
        return None
    values, labels = scores["scores"], scores.get("labels")
    labels = labels if isinstance(labels, dict) else {}
    vector = {}
    for v in VALUE_NAMES:
        score = values.get(v)
        if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
            return None
        vector[v] = (float(score), labels.get(v))
    return vector


def build_report(target: AuditStore | Path | str, window: str = "day") -> str:
    """The HTML page for the log ``target`` names (a store, a path or a URL)."""
    with opened(target) as store:
        return _page(store, window)


def _page(store: AuditStore, window: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    summary = stats(store, window)
    check = verify(store)
    sums: dict[str, float] = dict.fromkeys(VALUE_NAMES, 0.0)
    opposed: Counter[str] = Counter()
    scored = 0
    malformed: list[int] = []  # seqs of records whose scores lack a value or are not numbers
    by_window: dict[str, Counter[str]] = {}
    for r in records(store):
        counts = by_window.setdefault(bucket(r["ts"], window), Counter())
        for dim in {v["dimension"] for v in r.get("violations", [])}:
            counts[dim] += 1
        if r.get("scores"):
            vector = _score_vector(r["scores"])
            if vector is None:
                malformed.append(r["seq"])
                continue
            scored += 1
            for v in VALUE_NAMES:
                sums[v] += vector[v][0]
                opposed[v] += vector[v][1] == -1
    mean = {v: sums[v] / scored if scored else 0.0 for v in VALUE_NAMES}
    share = {v: opposed[v] / scored if scored else 0.0 for v in VALUE_NAMES}

    def table(title: str, counts: dict[str, int]) -> str:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{n}</td></tr>" for k, n in counts.items())
        body = rows or "<tr><td>-</td><td>0</td></tr>"
        return f"<h3>{html.escape(title)}</h3><table><tr><th></th><th>count</th></tr>{body}</table>"

    status_class = "ok" if check.exit_code == 0 else "bad"
    skipped = ""
    if malformed:
        shown_seqs = ", ".join(str(n) for n in malformed[:10]) + (", ..." if len(malformed) > 10 else "")
        skipped = (
            f'<br><b class="bad">Skipped:</b> {len(malformed)} record(s) whose scores are malformed '
            f"(a value missing or not a number; seq {shown_seqs}) are left out of the value profile"
        )
    profile_chart = radar([RadarSeries(MEAN_LABEL, mean, share)])
    over_time, shown = _violations_over_time(by_window)
    over_time_alt = "violations over time: " + (", ".join(shown) if shown else "none recorded")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>guardrail audit report: {html.escape(store.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }}
table {{ border-collapse: collapse; font-size: 0.9rem; }}
td, th {{ padding: 0.2rem 0.8rem; border-bottom: 1px solid #ddd; }}
.ok {{ color: #2c7a4b; }} .bad {{ color: #b3261e; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Audit report</h1>
<p><b>Log:</b> {html.escape(store.name)}<br><b>Records:</b> {summary["records"]} ({summary["errors"]} with errors)<br>
<b>Integrity:</b> <span class="{status_class}">{html.escape(check.summary())}</span>{skipped}</p>
<div class="grid">
<img alt="radar chart of the mean value scores" src="data:image/png;base64,{profile_chart}">
<img alt="bar chart of action counts" src="data:image/png;base64,{_actions(summary["by_action"])}">
</div>
<img alt="{html.escape(over_time_alt)}" src="data:image/png;base64,{over_time}">
<div class="grid">
{table("By action", summary["by_action"])}
{table("By violated value", summary["by_violated_value"])}
{table("By policy", summary["by_policy"])}
{table("By deployment", summary["by_deployment"])}
</div>
</body></html>
"""
