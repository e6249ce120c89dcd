"""report.html: one self-contained page (plotly.js embedded, no network needed to open it)."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from sweeper.report._info import BREAKDOWN_LABELS, BREAKDOWN_PARTS, PARETO_GROUPS, SIZING_NOTE, ReportInfo
from sweeper.vocabulary import compute_ms, metric_words, parameter_columns

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
td, th { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } .note { color: #a60; }
"""


def _sizing_sections(info: ReportInfo) -> list[str]:
    """Capacity and memory per trial, and the fleet for a target rate, where the report has them."""
    sections = []
    if not info.sizing.empty:
        sections.append("<h2>Capacity and memory</h2>")
        sections.append(f"<p>{html.escape(SIZING_NOTE)}</p>")
        sections.append(_table(info.sizing.reset_index(names="trial"), knobs_first=False))
    if info.fleet is not None:
        sections.append(f"<h2>{html.escape(info.fleet_title)}</h2>")
        sections.append(f'<p class="fleet">{html.escape(" ".join(info.fleet_sentences))}</p>')
        sections.append(_table(info.fleet.reset_index(names="trial"), knobs_first=False))
    return sections


def render_html(info: ReportInfo) -> str:
    """The report page."""
    sections = [f"<h1>triton-sweeper: {html.escape(info.study_name)}</h1>"]
    if info.running:
        sections.append(
            f'<p class="note">{info.running} trial(s) still running: this report shows what is finished.</p>'
        )
    sections.append(_summary_paragraph(info))
    again = " (re-ranked from the stored measurements, not the study's own objectives)" if info.reranked else ""
    sections.append(f'<p class="ranking">Ranked by {html.escape(info.ranked_by)}{again}.</p>')
    sections.append("<h2>Pareto front</h2>")
    if len(info.objectives) >= 2:
        sections.append(_figure(_pareto_figure(info), "pareto"))
    sections.append("<h2>How far the front can be trusted</h2>")
    sections.append(
        "<ul>" + "".join(f'<li class="confidence">{html.escape(s)}</li>' for s in info.confidence) + "</ul>"
    )
    sections.append(f"<h2>Where the latency goes ({info.breakdown_load}, mean per request)</h2>")
    sections.append(_figure(breakdown_figure(info), "breakdown"))
    sections.append("<h2>Batching: measured average batch size (inferences per model execution)</h2>")
    sections.append(_table(info.batching.reset_index(names="trial"), knobs_first=False))
    sections.extend(_sizing_sections(info))
    sections.append("<h2>Pareto trials</h2>")
    sections.append(_table(info.pareto.drop(columns=["state"], errors="ignore")))
    if info.hypervolume_history is not None:
        sections.append("<h2>Hypervolume history</h2>")
        sections.append(_figure(_hypervolume_figure(info), "hypervolume"))
    sections.append("<h2>Parameter importances</h2>")
    sections.extend(_importance_sections(info))
    sections.append("<h2>Failed and infeasible trials</h2>")
    sections.append(_table(info.problems) if not info.problems.empty else "<p>None.</p>")
    sections.append("<h2>Measured on</h2>")
    sections.append("<ul>" + "".join(f'<li class="machine">{html.escape(m)}</li>' for m in info.machines) + "</ul>")
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>triton-sweeper: {html.escape(info.study_name)}</title><style>{_STYLE}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>\n{body}\n</body></html>\n"
    )


def _summary_paragraph(info: ReportInfo) -> str:
    parts = []
    if info.in_process is not None:
        label = info.in_process.label
        parts.append(f"{label[0].upper()}{label[1:]}: <b>{info.in_process.ms:.3g} ms</b>.")
    for name, row in (("Baseline", info.baseline), ("Lowest served p50", info.best_latency)):
        if row is not None:
            parts.append(
                f"{name} {html.escape(row['label'])}: p50 <b>{row['p50_ms']:.3g} ms</b> at "
                f"{info.breakdown_load} (queue {row['queue_ms']:.3g}, compute "
                f"{compute_ms(row):.3g}, client/network {row['network_ms']:.3g} ms mean; "
                f"average batch {row['avg_batch_size']:.2f})."
            )
    measured = ", ".join(f"{name}: {count} trial(s)" for name, count in sorted(info.generators.items()))
    parts.append(f"Load generator: {html.escape(measured)}.")
    return f"<p>{' '.join(parts)}</p>"


def _pareto_figure(info: ReportInfo) -> go.Figure:
    """The front over the first two objectives; dominated trials grey, the baseline a star,
    each trial's five knobs on hover."""
    x, y = info.objectives[0], info.objectives[1]
    figure = go.Figure()
    chosen = info.recommended_point()
    if chosen is not None:  # under the groups' markers: a ring around the trial to deploy
        figure.add_trace(
            go.Scatter(
                x=[chosen[x]],
                y=[chosen[y]],
                name=f"recommendation (#{int(chosen['number'])})",
                mode="markers",
                marker={"size": 24, "symbol": "circle-open", "color": "#1f77b4", "line": {"width": 2}},
                hoverinfo="skip",
            )
        )
    hover = "<br>".join(["trial %{customdata[0]}", "%{customdata[1]}", f"{x}=%{{x:.4g}}", f"{y}=%{{y:.4g}}"])
    hover += "<extra></extra>"
    for group, style in PARETO_GROUPS.items():
        points = info.pareto_group(group)
        if points.empty:
            continue
        figure.add_trace(
            go.Scatter(
                x=points[x],
                y=points[y],
                name=group,
                mode="lines+markers" if group == "Pareto front" else "markers",
                marker={"color": style["color"], "size": style["size"], "symbol": style["plotly"]},
                customdata=points[["number", "label"]].to_numpy(),
                hovertemplate=hover,
                error_x=_error_bar(points, x),
                error_y=_error_bar(points, y),
            )
        )
    figure.update_layout(
        xaxis_title=metric_words(x), yaxis_title=metric_words(y), legend={"orientation": "h", "y": -0.2}
    )
    return figure


def _error_bar(points: pd.DataFrame, column: str) -> dict:
    """A confirmed trial's spread (its lowest and highest measurement) around its median; none
    for a trial measured once."""
    return {
        "type": "data",
        "symmetric": False,
        "array": (points[f"{column}:hi"] - points[column]).fillna(0).tolist(),
        "arrayminus": (points[column] - points[f"{column}:lo"]).fillna(0).tolist(),
        "visible": bool((points["measured"] > 1).any()),
        "thickness": 1.2,
    }


def breakdown_figure(info: ReportInfo) -> go.Figure:
    figure = go.Figure()
    for part in BREAKDOWN_PARTS:
        figure.add_trace(go.Bar(name=BREAKDOWN_LABELS[part], x=info.breakdown["label"], y=info.breakdown[part]))
    figure.update_layout(barmode="stack", yaxis_title="ms per request (mean)", legend_title="part")
    return figure


def _hypervolume_figure(info: ReportInfo) -> go.Figure:
    history = info.hypervolume_history
    figure = go.Figure(go.Scatter(x=history["number"], y=history["hypervolume"], mode="lines+markers"))
    figure.update_layout(xaxis_title="trial", yaxis_title="hypervolume of the feasible trials so far")
    return figure


def _importance_sections(info: ReportInfo) -> list[str]:
    sections = []
    for index, (objective, found) in enumerate(info.importances.items()):
        if isinstance(found, str):
            sections.append(f"<p>{html.escape(objective)}: {html.escape(found)}</p>")
            continue
        figure = go.Figure(go.Bar(x=list(found.values()), y=list(found), orientation="h"))
        figure.update_layout(title=objective, xaxis_title="importance", height=300)
        sections.append(_figure(figure, f"importance-{index}"))
    return sections


def _figure(figure: go.Figure, element_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=element_id)


def _table(frame: pd.DataFrame, knobs_first: bool = True) -> str:
    first = ["number", *[c for c in parameter_columns(frame.columns) if c in frame.columns]] if knobs_first else []
    columns = [*first, *[c for c in frame.columns if c not in first]]
    table = frame[columns].to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)
    return f'<div style="overflow-x:auto">{table}</div>'
