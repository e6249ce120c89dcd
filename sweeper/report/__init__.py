"""Stage 8: the report of a study folder: report.html, pareto.png, breakdown.png, summary.md.

``collect`` computes a frozen ``ReportInfo``; the renderers (plotly HTML, matplotlib PNG,
Markdown) only draw it. Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from sweeper.files import atomic_path, write_atomic
from sweeper.report._html import render_html
from sweeper.report._info import ReportInfo, collect
from sweeper.report._png import render_breakdown, render_pareto
from sweeper.report._summary import render_summary

__all__ = ["ReportInfo", "collect", "write_report"]


def write_report(study: optuna.Study, directory: Path) -> ReportInfo:
    """Compute the report of ``study`` and write its four files into ``directory``."""
    info = collect(study, directory)
    write_atomic(directory / "report.html", render_html(info))
    with atomic_path(directory / "pareto.png") as temporary:
        render_pareto(info, temporary)
    with atomic_path(directory / "breakdown.png") as temporary:
        render_breakdown(info, temporary)
    write_atomic(directory / "summary.md", render_summary(info))
    return info
