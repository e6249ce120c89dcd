"""summary.md: the gap analysis in words and numbers, the way the article tells it."""

from __future__ import annotations

import pandas as pd

from sweeper.report._info import SIZING_NOTE, ReportInfo
from sweeper.vocabulary import compute_ms, parameter_columns


def render_summary(info: ReportInfo) -> str:
    """summary.md."""
    lines = [f"# {info.study_name}: where the latency goes", ""]
    if info.running:
        lines += [f"> {info.running} trial(s) still running: this summary covers the finished ones.", ""]
    lines += _overview_lines(info)
    lines += _latency_table(info)
    lines += _gap_sentences(info)
    lines += [
        "",
        "## Batching",
        "",
        "Measured average batch size (inferences per model execution) of the Pareto trials and the baseline; "
        "1.00 means every request ran alone.",
        "",
        _batching_table(info),
    ]
    if not info.sizing.empty:
        lines += ["", "## Capacity and memory", "", SIZING_NOTE, "", _labelled_table(info.sizing)]
    if info.fleet is not None:
        lines += ["", f"## {info.fleet_title}", "", " ".join(info.fleet_sentences), "", _labelled_table(info.fleet)]
    lines += ["", "## Pareto front", "", _markdown_table(info)]
    lines += ["", "## How far the front can be trusted", "", *(f"- {s}" for s in info.confidence)]
    lines += ["", "## Measured on", "", *(f"- {m}" for m in info.machines)]
    return "\n".join(lines) + "\n"


def _overview_lines(info: ReportInfo) -> list[str]:
    """How many trials, how they ended, what measured them and what ranks them."""
    trials = info.tables.trials
    complete = trials["state"] == "COMPLETE"
    return [
        f"{len(trials)} trials: {int(complete.sum())} completed, {int((trials['state'] == 'FAIL').sum())} failed, "
        f"{int((complete & ~trials['feasible']).sum())} infeasible; "
        f"{len(info.pareto)} on the Pareto front of {', '.join(info.objectives)}. Measured by "
        + ", ".join(f"{name} ({count} trials)" for name, count in sorted(info.generators.items()))
        + ".",
        "",
        f"Ranked by {info.ranked_by}"
        + (" (re-ranked from the stored measurements, not the study's own objectives)." if info.reranked else "."),
        "",
    ]


def _latency_table(info: ReportInfo) -> list[str]:
    """The breakdown at the lowest listed level: in-process, the baseline, the lowest served p50."""
    lines = [
        f"Latency at {info.breakdown_load} (mean per request, ms):",
        "",
        "| | p50 | mean | queue | compute (input + infer + output) | client / network / serialization | avg batch |",
        "|---|---|---|---|---|---|---|",
    ]
    if info.in_process is not None:
        lines.append(f"| {info.in_process.label} | {info.in_process.ms:.3g} | | | | | |")
    for name, row in (("baseline", info.baseline), ("lowest served p50", info.best_latency)):
        if row is None:
            continue
        lines.append(
            f"| {name}: {row['label']} | {row['p50_ms']:.3g} | {row['mean_ms']:.3g} | {row['queue_ms']:.3g} "
            f"| {compute_ms(row):.3g} ({row['compute_input_ms']:.2g} + {row['compute_infer_ms']:.3g} + "
            f"{row['compute_output_ms']:.2g}) | {row['network_ms']:.3g} | {row['avg_batch_size']:.2f} |"
        )
    return [*lines, ""]


def _gap_sentences(info: ReportInfo) -> list[str]:
    sentences = []
    base, best = info.baseline, info.best_latency
    local = info.in_process.ms if info.in_process is not None else None
    if base is not None and local:
        sentences.append(
            f"- The baseline's median p50 is {base['p50_ms'] / local:.2g}x the {info.in_process.label}'s "
            f"({base['p50_ms']:.3g} ms against {local:.3g} ms); {_largest_part(base)}."
        )
    if best is not None and local:
        sentences.append(
            f"- The lowest served median p50 is {best['p50_ms'] / local:.2g}x in-process; {_largest_part(best)}."
        )
    if base is not None and best is not None and best["number"] != base["number"]:
        if best["p50_hi"] < base["p50_lo"]:
            change = f"{base['p50_ms'] / best['p50_ms']:.2g}x lower, beyond both spreads"
        else:
            change = "no measurable change: the spreads overlap"
        sentences.append(
            f"- Against the baseline, median p50 goes from {base['p50_ms']:.3g} ms "
            f"({base['p50_lo']:.3g}-{base['p50_hi']:.3g}) to {best['p50_ms']:.3g} ms "
            f"({best['p50_lo']:.3g}-{best['p50_hi']:.3g}): {change}; queue time from {base['queue_ms']:.3g} to "
            f"{best['queue_ms']:.3g} ms, client/network from {base['network_ms']:.3g} to {best['network_ms']:.3g} ms."
        )
    return sentences


def _largest_part(row: dict) -> str:
    parts = {
        "queueing": row["queue_ms"],
        "compute": compute_ms(row),
        "client/network/serialization": row["network_ms"],
    }
    name = max(parts, key=parts.get)
    share = parts[name] / row["mean_ms"] if row["mean_ms"] else 0
    return f"the largest part is {name} ({parts[name]:.3g} ms, {share:.0%} of the mean)"


def _markdown_table(info: ReportInfo) -> str:
    columns = [
        "number",
        *parameter_columns(info.pareto.columns),
        *info.objectives,
        "measured",
        *[f"{o}{end}" for o in info.objectives for end in (":lo", ":hi")],
        *[c for c in info.pareto.columns if c.endswith("/ baseline")],
        "cosine_similarity",
        *[c for c in ("top1_agreement",) if c in info.pareto and info.pareto[c].notna().any()],
    ]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in info.pareto[columns].to_dict("records"):
        rows.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in record.values()) + " |")
    return "\n".join(rows)


def _labelled_table(frame: pd.DataFrame) -> str:
    """A table whose index is the trials' labels."""
    columns = list(frame.columns)
    rows = ["| trial | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, values in frame.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v) for v in values]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _batching_table(info: ReportInfo) -> str:
    columns = list(info.batching.columns)
    rows = ["| trial | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, values in info.batching.iterrows():
        rows.append(f"| {label} | " + " | ".join(f"{values[c]:.2f}" for c in columns) + " |")
    return "\n".join(rows)
