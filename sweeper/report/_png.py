"""pareto.png and breakdown.png (matplotlib) for terminals, CI logs and papers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted

import matplotlib.pyplot as plt
import pandas as pd

from sweeper.report._info import BREAKDOWN_LABELS, BREAKDOWN_PARTS, PARETO_GROUPS, ReportInfo
from sweeper.vocabulary import metric_words


def render_pareto(info: ReportInfo, path: Path) -> Path:
    """pareto.png: the front over the first two objectives (or one objective per trial)."""
    figure, axes = plt.subplots(figsize=(8, 6))
    if len(info.objectives) >= 2:
        x, y = info.objectives[0], info.objectives[1]
        for group, style in PARETO_GROUPS.items():
            points = info.pareto_group(group)
            if not points.empty:
                _plot_group(axes, points, x, y, group, style)
        _mark_recommendation(axes, info, x, y)
        axes.set_xlabel(metric_words(x))
        axes.set_ylabel(metric_words(y))
        axes.legend(loc="best")
    else:  # one objective: its value per trial
        axes.plot(info.points["number"], info.points[info.objectives[0]], "o")
        axes.set_xlabel("trial")
        axes.set_ylabel(metric_words(info.objectives[0]))
    axes.set_title(f"Pareto front: {info.study_name}")
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)
    return path


def _plot_group(axes: plt.Axes, points: pd.DataFrame, x: str, y: str, group: str, style: dict) -> None:
    """One group of points (``PARETO_GROUPS``), the spread of its confirmed trials and their numbers."""
    axes.plot(
        points[x],
        points[y],
        marker=style["matplotlib"],
        color=style["color"],
        label=group,
        markersize=style["size"] * 0.8,
        linestyle="-" if group == "Pareto front" else "none",
    )
    confirmed = points[points["measured"] > 1]
    if not confirmed.empty:  # the spread of the trials measured on several fresh servers
        axes.errorbar(
            confirmed[x],
            confirmed[y],
            xerr=[confirmed[x] - confirmed[f"{x}:lo"], confirmed[f"{x}:hi"] - confirmed[x]],
            yerr=[confirmed[y] - confirmed[f"{y}:lo"], confirmed[f"{y}:hi"] - confirmed[y]],
            fmt="none",
            ecolor=style["color"],
            elinewidth=1,
            capsize=2,
        )
    for _, point in points.iterrows() if group != "baseline" else ():
        label = f"#{int(point['number'])}"
        axes.annotate(label, (point[x], point[y]), fontsize=7, xytext=(4, 4), textcoords="offset points")


def _mark_recommendation(axes: plt.Axes, info: ReportInfo, x: str, y: str) -> None:
    """A ring around the trial to deploy."""
    chosen = info.recommended_point()
    if chosen is not None:
        axes.plot(
            [chosen[x]],
            [chosen[y]],
            marker="o",
            markersize=18,
            markerfacecolor="none",
            markeredgecolor="#1f77b4",
            markeredgewidth=2,
            linestyle="none",
            label=f"recommendation (#{int(chosen['number'])})",
        )


def render_breakdown(info: ReportInfo, path: Path) -> Path:
    """breakdown.png: the stacked latency breakdown, with each trial's average batch size."""
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(info.breakdown) + 3), 5))
    bottom = [0.0] * len(info.breakdown)
    for part in BREAKDOWN_PARTS:
        values = info.breakdown[part].tolist()
        axes.bar(info.breakdown["label"], values, bottom=bottom, label=BREAKDOWN_LABELS[part])
        bottom = [b + v for b, v in zip(bottom, values)]
    for index, size in enumerate(info.breakdown["avg_batch_size"]):
        axes.annotate(f"batch {size:.2f}", (index, bottom[index]), ha="center", va="bottom", fontsize=7)
    axes.set_ylabel("ms per request (mean)")
    axes.set_title(f"Where the latency goes at {info.breakdown_load}")
    axes.tick_params(axis="x", labelrotation=20, labelsize=7)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)
    return path
