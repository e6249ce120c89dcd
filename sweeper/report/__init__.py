"""Stage 8: the report of a study folder: report.html, pareto.png, breakdown.png, summary.md.

``collect`` computes a frozen ``ReportInfo``; the renderers (plotly HTML, matplotlib PNG,
Markdown) only draw it. Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from sweeper.files import atomic_path, write_atomic
from sweeper.fleet import FleetTarget
from sweeper.record import StudyRecord
from sweeper.report._html import render_html
from sweeper.report._info import ReportInfo, collect, in_process_of, param_importances
from sweeper.report._png import render_breakdown, render_pareto
from sweeper.report._summary import render_summary
from sweeper.results import StudyTables

__all__ = ["ReportInfo", "collect", "machines", "write_report"]


def machines(record: StudyRecord) -> list[dict]:
    """The distinct machines (and load generators) the study's trials were measured on."""
    found: list[dict] = []
    for trial in record.trials:
        if trial.machine is None:
            continue
        machine = {**trial.machine, "generator": trial.generator.name if trial.generator else None}
        if machine not in found:
            found.append(machine)
    return found


def write_report(
    study: optuna.Study, record: StudyRecord, result: StudyTables, out: Path, target: FleetTarget | None = None
) -> ReportInfo:
    """Draw the report of ``study`` (its ``record`` and its ``result`` tables, under its own
    ranking or a re-rank: nothing is measured again) into the four files in ``out``; with a
    ``target``, the servers each Pareto trial needs for it."""
    info = collect(
        result,
        study_name=record.name,
        in_process=in_process_of(record.facts),
        importances=param_importances(study, result.ranking),
        reranked=result.ranking != record.ranking,
        machines=machines(record),
        target=target,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.html", render_html(info))
    with atomic_path(out / "pareto.png") as temporary:
        render_pareto(info, temporary)
    with atomic_path(out / "breakdown.png") as temporary:
        render_breakdown(info, temporary)
    write_atomic(out / "summary.md", render_summary(info))
    return info
