"""Stage 8: the report of a study folder: report.html, pareto.png, breakdown.png, summary.md.

``collect`` computes a frozen ``ReportInfo``; the renderers (plotly HTML, matplotlib PNG,
Markdown) only draw it. Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from sweeper.files import atomic_path, write_atomic
from sweeper.record import StudyRecord, read_study
from sweeper.report._html import render_html
from sweeper.report._info import ReportInfo, collect, in_process_ms, param_importances
from sweeper.report._png import render_breakdown, render_pareto
from sweeper.report._summary import render_summary
from sweeper.results import tables
from sweeper.vocabulary import Ranking

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
    study: optuna.Study, directory: Path, ranking: Ranking | None = None, out: Path | None = None
) -> ReportInfo:
    """Compute the report of ``study`` (under its own ranking, or ``ranking``: nothing is
    measured again) and write its four files into ``out`` (default ``directory``, the study
    folder, where its models and samples are read)."""
    record = read_study(study)
    result = tables(record, ranking)
    info = collect(
        result,
        study_name=record.name,
        in_process_ms=in_process_ms(directory, record.facts),
        importances=param_importances(study, result.ranking),
        reranked=result.ranking != record.ranking,
        machines=machines(record),
    )
    directory = out or directory
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "report.html", render_html(info))
    with atomic_path(directory / "pareto.png") as temporary:
        render_pareto(info, temporary)
    with atomic_path(directory / "breakdown.png") as temporary:
        render_breakdown(info, temporary)
    write_atomic(directory / "summary.md", render_summary(info))
    return info
