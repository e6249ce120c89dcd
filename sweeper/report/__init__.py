"""Stage 8: the report of a study folder: report.html, pareto.png, breakdown.png, summary.md.

``collect`` computes a frozen ``ReportInfo``; the renderers (plotly HTML, matplotlib PNG,
Markdown) only draw it.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from sweeper.report._html import render_html
from sweeper.report._info import ReportInfo, collect, knee
from sweeper.report._png import render_pngs
from sweeper.report._summary import render_summary

__all__ = ["ReportInfo", "collect", "knee", "write_report"]


def write_report(study: optuna.Study, directory: Path) -> ReportInfo:
    info = collect(study, directory)
    (directory / "report.html").write_text(render_html(info, study))
    render_pngs(info, directory)
    (directory / "summary.md").write_text(render_summary(info))
    return info
