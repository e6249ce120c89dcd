"""The command line: ``sweeper init | run | check | report | export | verify``.

Strings from the spec become launcher classes here, and library errors are translated once,
here, into one line plus a hint: exit status 2 for bad input (nothing was started or written),
1 for a run that could not go on, 130 for Ctrl-C and 143 for SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import sqlalchemy.exc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sweeper.errors import SpecError, SweeperError, UsageError
from sweeper.export import export
from sweeper.files import write_atomic
from sweeper.fleet import FleetTarget, sizing_capacity
from sweeper.record import StudyRecord, TrialRecord, read_study, read_trial, sweeper_version
from sweeper.results import StudyTables, confidence_sentences, parse_ranking, tables, write_tables
from sweeper.server_options import server_argv
from sweeper.signals import Terminated, signals_unwind
from sweeper.spec import load_spec
from sweeper.storage import open_stored_study
from sweeper.vocabulary import Ranking, knob_label, parameter_columns

if TYPE_CHECKING:
    from sweeper.sweep import Sweep, SweepPlan

# Tables stay readable when the output is a pipe or a CI log (rich assumes 80 columns there).
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


def _trial_line(trial: TrialRecord, ranking: Ranking, total: int, done: int) -> str:
    head = f"trial {trial.number} [{done}/{total}]{' (baseline)' if trial.baseline else ''}  "
    if trial.neighbour_of is not None:
        head = f"trial {trial.number} [{done}/{total}] (a neighbour of trial {trial.neighbour_of}, on the front)  "
    if trial.repeat_of is not None:
        head = f"trial {trial.number}: {'anchor' if trial.anchor else 'repeat'} of trial {trial.repeat_of}  "
    head += knob_label(trial.config) if trial.config is not None else ""
    dropped = ""
    if trial.dropped_precision:
        dropped = (
            f"\n  precision {trial.config.precision} leaves the search space: its other configurations are not"
            " measured, and this trial does not count toward study.trials"
        )
    if trial.kind != "complete":
        reason = trial.failure if trial.kind == "failed" else f"interrupted ({trial.interrupted or 'stopped'})"
        twice = f" (measured twice; the first time: {escape(trial.retried)})" if trial.retried else ""
        return f"{head}  [red]FAILED[/red]{twice}: {escape(reason)}{dropped}"
    if trial.retried:
        head += f"  [yellow]measured again[/yellow] (its first measurement was lost: {escape(trial.retried)})"
    figures = "  ".join(f"{column}={trial.figures[column]:.4g}" for column in ranking.columns)
    flags = "" if trial.feasible(ranking) else "  [yellow]infeasible[/yellow]"
    if trial.client_bound:
        flags += "  [yellow]client-bound[/yellow]"
    if not trial.stable:
        flags += "  [yellow]unstable[/yellow]"
    return f"{head}  {figures}{flags}{dropped}"


def print_pareto(study_name: str, result: StudyTables) -> None:
    """The Pareto front as a table on the console."""
    table = Table(title=f"Pareto front of '{study_name}' ({len(result.pareto)} of {len(result.trials)} trials)")
    columns = ["number", *parameter_columns(result.trials.columns), *result.objectives]
    for column in columns:
        table.add_column(column, justify="right")
    for values in result.pareto.sort_values("number").to_dict("records"):
        mark = " (baseline)" if values["baseline"] else ""
        table.add_row(*[_cell(values[c]) + (mark if c == "number" else "") for c in columns])
    console.print(table)
    if result.pareto.empty:
        console.print(
            "[yellow]No feasible completed trial: see trials.csv for failures and constraint violations.[/yellow]"
        )


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):  # unset, or NaN
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plan(args: argparse.Namespace) -> SweepPlan:
    """Every check of ``run``, nothing written or started."""
    from sweeper.sweep import plan_sweep  # servers, containers and load: only run and check need them

    loaded = load_spec(Path(args.spec), study_name=args.study, trials=args.trials)
    return plan_sweep(
        loaded,
        results_dir=Path(args.results_dir),
        storage=args.storage,
        allow_other_machine=args.allow_other_machine,
    )


def cmd_check(args: argparse.Namespace) -> int:
    """``sweeper check SPEC``: every check ``run`` makes before its first write; nothing more."""
    plan = _plan(args)
    _print_plan(plan)
    console.print(f"{plan.loaded.path}: valid; nothing was started or written (sweeper run {args.spec} runs it)")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """``sweeper init SOURCE [-o SPEC]``: a first spec for a model, checked as ``check`` would."""
    from sweeper.starter import draft, spec_text, unique_study_name

    out = Path(args.output) if args.output else None
    if out is not None and out.is_dir():
        raise UsageError(
            f"-o {out}: is a folder; -o names the spec file to write", hint=f"e.g. -o {out / 'sweep.yaml'}"
        )
    if out is not None and out.exists() and not args.force:
        raise UsageError(f"{out} exists; sweeper init does not overwrite it", hint="--force to replace it")
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"-o {out}: the folder {out.parent} does not exist", hint=f"mkdir -p {out.parent} first")
    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    budget = args.latency_budget
    if budget is not None and not (0 < budget <= 3_600_000):
        raise UsageError(f"--latency-budget must be a number of milliseconds in (0, 3600000], got {budget:g}")
    model = draft(args.source, out.parent if out is not None else Path.cwd(), keep_gpu=args.keep_gpu)
    study_name = unique_study_name(model.name, Path("results"))
    spec_name = str(out) if out is not None else "spec.yaml"
    text = spec_text(
        model, spec_name, args.trials, study_name=study_name, latency_budget_ms=budget, keep_gpu=args.keep_gpu
    )
    if out is None:
        print(text, end="")
        return 0
    write_atomic(out, text)
    console.print(f"wrote {out} for {model.name} ({model.kind} source)", markup=False)
    for check in model.checks:
        errors.print(f"  CHECK: {check}", markup=False)
    load_spec(out)  # the spec runs as it is: every check run makes (a PyTorch factory is exported once)
    console.print(f"{out}: valid; sweeper run {out}", markup=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``sweeper run SPEC``: run (or resume) a sweep, then write its tables and report."""
    from sweeper.sweep import Sweep

    plan = _plan(args)
    loaded = plan.loaded
    _print_plan(plan)
    with Sweep(plan) as sweep:
        if sweep.removed_leftovers:
            left = f"removed {sweep.removed_leftovers} container(s) that an earlier run of '{loaded.name}' left behind"
            console.print(left)
        outcome = _run_with_progress(sweep)
    record, result = sweep.record(), sweep.tables  # the tables written on the way out
    if outcome == "exhausted":
        console.print(
            f"[yellow]the search space is exhausted: all {loaded.space_size} configurations are measured[/yellow]"
        )
    if result.redraws:
        console.print(f"{result.redraws} proposal(s) repeated a configuration already taken and were asked again")
    print_pareto(loaded.name, result)
    _print_confidence(result)
    console.print(f"wrote {plan.directory / 'trials.csv'}, measurements.csv, pareto.csv")
    completed = (result.trials["state"] == "COMPLETE").any()
    if args.no_report:
        console.print(f"no report (--no-report): sweeper report {plan.directory} writes it")
    elif completed:
        _report(sweep.study, record, result, plan.directory)
    if not completed:
        errors.print(
            f"sweeper: error: study '{loaded.name}' completed no trial, so there is nothing to report or export; "
            f"{plan.directory / 'trials.csv'} says why each failed",
            markup=False,
        )
        return 1
    return 0


def _print_confidence(result: StudyTables) -> None:
    """What confirmation found: the trials measured again, ties on the front and at the knee, drift."""
    for sentence in confidence_sentences(result):
        console.print(sentence, markup=False)


def _print_plan(plan: SweepPlan) -> None:
    loaded = plan.loaded
    total, size = loaded.spec.study.trials, loaded.space_size
    console.print(
        f"study '{loaded.name}': {total} trials over a space of {size} configurations, results in {plan.directory}"
    )
    added = loaded.added_to_space
    if added:
        shown = ", ".join(f"{name} {'unset' if value is None else value}" for name, value in added.items())
        console.print(
            f"the baseline's own values join the search space ({shown}): the baseline is always trial 0 "
            "(unset: the model's config lacks the field, or Triton's default option)",
            markup=False,
        )
    if total >= size:
        console.print(f"study.trials {total} >= the {size} configurations of the space: each is measured once")
    console.print(
        f"measured by {plan.generator.describe()}; servers: {loaded.spec.server.reuse} "
        f"({plan.launcher.describe()}, {plan.backend} backend)"
    )
    if loaded.model.host_changes:
        console.print(
            f"the model's config asks for a GPU and this host has none: measured on its CPU "
            f"({'; '.join(loaded.model.host_changes)}); the figures are this host's, and the export gives the "
            "GPU fields back (server.keep_gpu: true refuses instead)",
            markup=False,
        )
    address = loaded.spec.server.address
    if not _loopback(address):
        errors.print(
            f"warning: server.address {address}: Triton has no authentication; whoever reaches this "
            "host can run and load models on the sweep's servers while they run",
            markup=False,
        )


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _run_with_progress(sweep: Sweep) -> str:
    """Run the sweep with a progress bar and a line per trial (the sweep rewrites the tables
    after each trial and once more on the way out)."""
    from sweeper.search import counted

    ranking, total = sweep.plan.loaded.ranking, sweep.plan.loaded.spec.study.trials
    already = counted(sweep.study.get_trials(deepcopy=False))
    if already >= total:
        console.print(
            f"study '{sweep.plan.loaded.name}' is finished: {already} of {total} trials measured; "
            "nothing to run (raise --trials to measure more)"
        )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("trials", total=total, completed=min(already, total))

        def on_trial_end(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
            done = counted(study.get_trials(deepcopy=False))
            trial = read_trial(frozen)
            if trial.kind != "duplicate":
                progress.console.print(_trial_line(trial, ranking, total, done))
            progress.update(task, completed=min(done, total))

        return sweep.run(on_trial_end)


def _report(
    study: optuna.Study, record: StudyRecord, result: StudyTables, out: Path, target: FleetTarget | None = None
) -> None:
    from sweeper.report import write_report  # plotly and matplotlib load only for a report

    info = write_report(study, record, result, out, target)
    if info.running:
        console.print(f"[yellow]{info.running} trial(s) still running: the report shows the finished ones[/yellow]")
    console.print(f"report: {out / 'report.html'} (also pareto.png, breakdown.png, summary.md)")
    if info.reranked:
        console.print(f"ranked by {info.ranked_by}: re-ranked from the stored measurements, no server started")
    if info.fleet is not None:
        console.print(f"{info.fleet_title} (report.html, summary.md):", markup=False)
        console.print(info.fleet.to_string(float_format=lambda v: f"{v:,.4g}"), markup=False)
        for sentence in info.fleet_sentences:
            console.print(sentence, markup=False)


def cmd_report(args: argparse.Namespace) -> int:
    """``sweeper report DIR``: the tables and report of a study folder."""
    directory = Path(args.study_dir)
    study = open_stored_study(directory, args.storage)
    record = read_study(study)
    ranking = parse_ranking(record, args.objective, args.constraint)
    target = _fleet_target(args)
    if target is not None:
        sizing_capacity(ranking)  # refused before anything is written
    out = _folder_option(args.out, "--out") if args.out else directory
    result = tables(record, ranking)
    write_tables(result, out)
    _report(study, record, result, out, target)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``sweeper export DIR --out REPO``: the chosen trial as a deployable model repository."""
    directory = Path(args.study_dir)
    record = read_study(open_stored_study(directory, args.storage))
    ranking = parse_ranking(record, args.objective, args.constraint)
    pick = " ".join(args.pick)
    exported = export(
        record,
        directory,
        _folder_option(args.out, "--out"),
        pick=pick,
        where=args.where,
        backend=args.backend,
        ranking=ranking,
        target=_fleet_target(args),
    )
    console.print(f"exported trial {exported.trial} ({pick}) to {exported.model_dir}")
    for sentence in exported.why:
        console.print(f"  {sentence}", markup=False)
    for sentence in exported.fleet.sentences() if exported.fleet is not None else ():
        console.print(f"  {sentence}", markup=False)
    console.print(f"  {knob_label(exported.config)}  backend={exported.backend}")
    protocol = exported.config.protocol.upper()
    console.print(f"  clients should use [bold]{protocol}[/bold]: the protocol is client-side, not in config.pbtxt")
    options = server_argv(exported.config.server_options)
    if options:
        console.print(f"  start tritonserver with {' '.join(options)} (measured with them; not in config.pbtxt)")
    console.print(exported.pbtxt, markup=False)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``sweeper verify DIR``: an export measured again; 0 when its capacity holds, 1 when it regressed."""
    from sweeper.verify import read_export, verify  # servers and load: only verify needs them here

    export = read_export(Path(args.export_dir))
    if not args.json:
        console.print(f"verifying {export.folder}: a fresh server, the capacity measured as recorded", markup=False)
    verdict = verify(export, args.tolerance)
    if args.json:
        print(json.dumps({"export": str(export.folder), **verdict.as_dict()}))
    else:
        console.print(verdict.line(), markup=False)
        for note in verdict.notes:
            console.print(f"  note: {note}", markup=False)
    return 0 if verdict.holds else 1


def _verify_parser(commands: argparse._SubParsersAction) -> None:
    """``sweeper verify``."""
    verifier = commands.add_parser(
        "verify", help="measure an export again on a fresh server; exit 1 when its capacity regressed"
    )
    verifier.add_argument("export_dir", metavar="EXPORT_DIR", help="the folder sweeper export --out wrote")
    verifier.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        metavar="F",
        help="widen the band by this fraction of the recorded lowest capacity (default 0: the recorded spread)",
    )
    verifier.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    verifier.set_defaults(handler=cmd_verify)


def _folder_option(value: str, option: str) -> Path:
    """A folder the command writes into: refused (exit 2) when a file stands there."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {value}: is a file, not a folder", hint="give a folder (created if missing)")
    return path


def _fleet_target(args: argparse.Namespace) -> FleetTarget | None:
    """``--target-rate`` (with ``--headroom`` and ``--cost-per-hour``) as a FleetTarget, or None."""
    if args.target_rate is None:
        if args.headroom is not None or args.cost_per_hour is not None:
            raise UsageError("--headroom and --cost-per-hour size a fleet: give --target-rate too")
        return None
    return FleetTarget(args.target_rate, args.headroom or 0.0, args.cost_per_hour)


def _fleet_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target-rate",
        type=float,
        metavar="R",
        help="size a fleet: the servers that serve R inferences/s (requests/s at one sample a request) within "
        "the capacity's latency budget, from the lowest capacity measured on fresh servers",
    )
    parser.add_argument(
        "--headroom",
        type=float,
        metavar="F",
        help="with --target-rate: the fraction of each server's capacity kept spare (default 0)",
    )
    parser.add_argument(
        "--cost-per-hour",
        type=float,
        metavar="C",
        help="with --target-rate: what one server costs an hour; adds the cost per million inferences",
    )


def _spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="the YAML spec")
    parser.add_argument("--trials", type=int, help="total trials of the study (overrides study.trials)")
    parser.add_argument("--study", help="study name (overrides study.name)")
    parser.add_argument("--results-dir", default="results", help="where study folders go (default: results)")
    parser.add_argument("--storage", help="Optuna storage URL (default: SQLite in the study folder)")
    parser.add_argument(
        "--allow-other-machine",
        action="store_true",
        help="join (or resume) a study measured on another machine (other CPU, GPU, server or load generator)",
    )


def _ranking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--objective",
        action="append",
        default=[],
        metavar="DIR:METRIC@cN",
        help="re-rank by this objective instead of the study's own (min:p99_ms@c8, max:throughput@c8); "
        "repeatable; nothing is measured again",
    )
    parser.add_argument(
        "--constraint",
        action="append",
        default=[],
        metavar="COND",
        help="feasible only when '<metric@cN> <= X' (or >=) holds, instead of the study's own constraints; "
        "repeatable (the accuracy guard always holds)",
    )


def _init_parser(commands: argparse._SubParsersAction) -> None:
    """``sweeper init``."""
    init = commands.add_parser(
        "init", help="write a first spec for a model (an ONNX file, a model folder or module:factory)"
    )
    init.add_argument("source", help="model.onnx, a Triton model folder (config.pbtxt and 1/) or module.path:factory")
    init.add_argument("-o", "--output", help="the spec to write (default: print it)")
    init.add_argument(
        "--trials",
        type=int,
        help="trials of the study (default: what finishes in about 10 minutes here, confirmation included)",
    )
    init.add_argument(
        "--latency-budget",
        type=float,
        metavar="MS",
        help="rank by the load sustained while p99 stays within MS milliseconds (capacity) and server memory",
    )
    init.add_argument(
        "--keep-gpu",
        action="store_true",
        help="refuse a model config that asks for a GPU on a host without one (default: measure it on the CPU)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing --output")
    init.set_defaults(handler=cmd_init)


def _export_parser(commands: argparse._SubParsersAction) -> None:
    """``sweeper export``."""
    exporter = commands.add_parser("export", help="write the chosen trial as a Triton model repository")
    exporter.add_argument("study_dir", metavar="RESULTS_DIR/STUDY")
    exporter.add_argument("--out", required=True, help="model repository folder to write")
    exporter.add_argument(
        "--pick",
        nargs="+",
        default=["knee"],
        metavar="RULE",
        help="knee (default: the confirmed front's trial nearest the ideal point by ratio, or the baseline when "
        "nothing measurably beat it), 'trial N', min:<metric@cN> or max:<metric@cN>",
    )
    exporter.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COND",
        help="'<metric@cN> <= X' (also >=, <, >, ==); repeatable",
    )
    exporter.add_argument(
        "--backend",
        choices=["onnxruntime", "python", "original"],
        default=None,
        help="ONNX models: the onnxruntime backend (default for ONNX sources) or the python-backend "
        "model the sweep served; a model folder keeps its own backend (default)",
    )
    exporter.add_argument("--storage", help="Optuna storage URL (default: the folder's study.db)")
    _ranking_options(exporter)
    _fleet_options(exporter)
    exporter.set_defaults(handler=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (strict: unknown options are errors)."""
    parser = argparse.ArgumentParser(
        prog="sweeper",
        description="Find the best NVIDIA Triton Inference Server configuration for a model by measuring it.",
    )
    parser.add_argument(
        "--version", action="version", version=f"sweeper (triton-sweeper) {sweeper_version() or 'unknown'}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _init_parser(commands)

    run = commands.add_parser("run", help="run (or resume) a sweep from a YAML spec")
    _spec_options(run)
    run.add_argument(
        "--no-report",
        action="store_true",
        help="write the tables but not the report (e.g. on the workers of a shared study)",
    )
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check", help="check a spec as run would, starting and writing nothing")
    _spec_options(check)
    check.set_defaults(handler=cmd_check)

    report = commands.add_parser("report", help="write report.html, pareto.png, breakdown.png and summary.md")
    report.add_argument("study_dir", metavar="RESULTS_DIR/STUDY")
    report.add_argument("--storage", help="Optuna storage URL (default: the folder's study.db)")
    report.add_argument("--out", help="folder for the tables and report (default: the study folder)")
    _ranking_options(report)
    _fleet_options(report)
    report.set_defaults(handler=cmd_report)

    _export_parser(commands)
    _verify_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    # The CLI prints each failed trial once, with its reason; Optuna would add a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with signals_unwind():
            return args.handler(args)
    except SweeperError as exc:
        errors.print(f"sweeper: error: {exc}", markup=False)
        if exc.hint:
            errors.print(f"  hint: {exc.hint}", markup=False)
        return 2 if isinstance(exc, (SpecError, UsageError)) else 1  # bad input is 2; the rest, 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        errors.print(f"sweeper: error: cannot write or read {where}{exc.strerror or exc}", markup=False)
        errors.print(
            "  hint: check the results folder's free space and permissions; the study database is intact", markup=False
        )
        return 1
    except (sqlalchemy.exc.OperationalError, sqlite3.OperationalError) as exc:
        message = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
        errors.print(f"sweeper: error: the study database failed: {message}", markup=False)
        errors.print("  hint: check the disk space of the storage; finished trials are kept", markup=False)
        return 1
    except Terminated:
        errors.print("sweeper: terminated (SIGTERM); servers stopped, results so far are written")
        return 143
    except KeyboardInterrupt:
        errors.print("sweeper: interrupted; servers stopped, results so far are written")
        return 130


if __name__ == "__main__":
    sys.exit(main())
