"""The command line: ``sweeper run | report | export``.

Strings from the spec become launcher classes here, and library errors are translated once,
here, into one line plus a hint: exit status 2 for bad input (nothing was started or written),
1 for a run that could not go on, 130 for Ctrl-C and 143 for SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna
import sqlalchemy.exc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sweeper.errors import SweeperError, UsageError
from sweeper.export import export
from sweeper.launchers import LABEL_STUDY, LAUNCHERS
from sweeper.load import choose_generator
from sweeper.results import StudyTables, tables, write_tables
from sweeper.spec import LoadedSpec, load_spec
from sweeper.storage import default_storage, exclusive_run, open_storage, open_stored_study, storage_label
from sweeper.study import TrialRunner, choose_backend, counted, kind_of, open_study, run_study, store_study_facts
from sweeper.vocabulary import KNOBS, knob_label

# Tables stay readable when the output is a pipe or a CI log (rich assumes 80 columns there).
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C so every server and container is stopped on the way out."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _trial_line(trial: optuna.trial.FrozenTrial, objectives: list[str], total: int, done: int) -> str:
    head = f"trial {trial.number} [{done}/{total}]{' (baseline)' if trial.user_attrs.get('baseline') else ''}  "
    head += knob_label(trial.params)
    if trial.state != optuna.trial.TrialState.COMPLETE:
        reason = trial.user_attrs.get("failure") or f"interrupted ({trial.user_attrs.get('interrupted', 'stopped')})"
        return f"{head}  [red]FAILED[/red]: {escape(reason)}"
    figures = "  ".join(f"{name}={value:.4g}" for name, value in zip(objectives, trial.values))
    feasible = all(v <= 0 for v in trial.constraints.values())
    flags = "" if feasible else "  [yellow]infeasible[/yellow]"
    measurements = trial.user_attrs.get("measurements", [])
    if any(m["client_bound"] for m in measurements):
        flags += "  [yellow]client-bound[/yellow]"
    if not all(m["stable"] for m in measurements):
        flags += "  [yellow]unstable[/yellow]"
    return f"{head}  {figures}{flags}"


def print_pareto(study_name: str, result: StudyTables) -> None:
    """The Pareto front as a table on the console."""
    table = Table(title=f"Pareto front of '{study_name}' ({len(result.pareto)} of {len(result.trials)} trials)")
    columns = ["number", *KNOBS, *result.objectives]
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
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _check_results_dir(results_dir: Path) -> None:
    """Refuse a results folder that cannot hold the study, before anything is written."""
    existing = results_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--results-dir {results_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"--results-dir {results_dir}: {existing} is not writable",
            hint="choose a folder you can write to with --results-dir",
        )


def cmd_run(args: argparse.Namespace) -> int:
    """``sweeper run SPEC``: run (or resume) a sweep, then write its tables and report."""
    loaded = load_spec(Path(args.spec), study_name=args.study, trials=args.trials)
    results_dir = Path(args.results_dir)
    _check_results_dir(results_dir)
    directory = results_dir / loaded.name
    storage_url = args.storage or loaded.spec.study.storage or default_storage(directory.resolve())
    storage_label(storage_url)  # a malformed URL is bad input: refused before anything starts
    launcher = LAUNCHERS[loaded.spec.server.launcher].from_spec(loaded.spec.server)
    generator, analyzer, why = choose_generator(loaded.spec.load.generator, _setting(loaded))
    launcher.preflight()
    backend = choose_backend(loaded, launcher)
    total, size = loaded.spec.study.trials, loaded.space_size
    console.print(
        f"study '{loaded.name}': {total} trials over a space of {size} configurations, results in {directory}"
    )
    if total >= size:
        console.print(f"study.trials {total} >= the {size} configurations of the space: each is measured once")
    console.print(f"measured by {why}; servers: {loaded.spec.server.reuse} ({launcher.describe()}, {backend} backend)")
    directory.mkdir(parents=True, exist_ok=True)
    with exclusive_run(storage_url, loaded.name):
        removed = launcher.remove_leftovers({LABEL_STUDY: loaded.name})
        if removed:
            console.print(f"removed {removed} container(s) that an earlier run of '{loaded.name}' left behind")
        storage = open_storage(storage_url, loaded.spec.study.heartbeat_s)
        runner = TrialRunner(loaded, launcher, directory, backend, analyzer)
        runner.prepare()
        study = open_study(loaded, storage)
        store_study_facts(study, loaded, backend, launcher.has_gpu, generator)
        outcome = _run_with_progress(study, loaded, runner, storage, storage_url.startswith("sqlite"), directory)
    result = tables(study)
    if outcome == "exhausted":
        console.print(f"[yellow]the search space is exhausted: all {size} configurations are measured[/yellow]")
    if result.redraws:
        console.print(f"{result.redraws} proposal(s) repeated a configuration already taken and were asked again")
    print_pareto(loaded.name, result)
    console.print(f"wrote {directory / 'trials.csv'}, measurements.csv, pareto.csv")
    if args.no_report:
        console.print(f"no report (--no-report): sweeper report {directory} writes it")
    elif (result.trials["state"] == "COMPLETE").any():
        _report(study, directory)
    else:
        console.print("[yellow]no completed trial, so no report: trials.csv says why each failed[/yellow]")
    return 0


def _run_with_progress(
    study: optuna.Study,
    loaded: LoadedSpec,
    runner: TrialRunner,
    storage: optuna.storages.RDBStorage,
    exclusive: bool,
    directory: Path,
) -> str:
    """Run the study with a progress bar and a line per trial; the tables are rewritten after each
    trial and once more on the way out (Ctrl-C, a crash), so they hold every finished trial."""
    objectives, total = [o.column for o in loaded.spec.objectives], loaded.spec.study.trials
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("trials", total=total)

        def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done = counted(study.get_trials(deepcopy=False))
            if kind_of(trial) != "duplicate":
                progress.console.print(_trial_line(trial, objectives, total, done))
            progress.update(task, completed=min(done, total))
            write_tables(tables(study), directory)

        failed = True
        try:
            _, outcome = run_study(study, loaded, runner, storage, exclusive=exclusive, on_trial_end=on_trial_end)
            failed = False
        finally:
            runner.servers.close()
            try:
                write_tables(tables(study), directory)
            except (OSError, sqlalchemy.exc.SQLAlchemyError):
                if not failed:
                    raise  # else the error that stopped the run is the one to report
    return outcome


def _setting(loaded: LoadedSpec) -> object:
    value = loaded.spec.load.perf_analyzer
    return value.model_dump() if hasattr(value, "model_dump") else value


def _report(study: optuna.Study, directory: Path) -> None:
    from sweeper.report import write_report  # plotly and matplotlib load only for a report

    info = write_report(study, directory)
    if info.running:
        console.print(f"[yellow]{info.running} trial(s) still running: the report shows the finished ones[/yellow]")
    console.print(f"report: {directory / 'report.html'} (also pareto.png, breakdown.png, summary.md)")


def cmd_report(args: argparse.Namespace) -> int:
    """``sweeper report DIR``: the tables and report of a study folder."""
    directory = Path(args.study_dir)
    study = open_stored_study(directory, args.storage)
    write_tables(tables(study), directory)
    _report(study, directory)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``sweeper export DIR --out REPO``: the chosen trial as a deployable model repository."""
    directory = Path(args.study_dir)
    study = open_stored_study(directory, args.storage)
    pick = " ".join(args.pick)
    exported = export(study, directory, Path(args.out), pick=pick, where=args.where, backend=args.backend)
    console.print(f"exported trial {exported.trial} ({pick}) to {exported.model_dir}")
    console.print(f"  {knob_label(exported.config)}  backend={exported.backend}")
    protocol = exported.config.protocol.upper()
    console.print(f"  clients should use [bold]{protocol}[/bold]: the protocol is client-side, not in config.pbtxt")
    console.print(exported.pbtxt, markup=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (strict: unknown options are errors)."""
    parser = argparse.ArgumentParser(prog="sweeper", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) a sweep from a YAML spec")
    run.add_argument("spec", help="the YAML spec")
    run.add_argument("--trials", type=int, help="total trials of the study (overrides study.trials)")
    run.add_argument("--study", help="study name (overrides study.name)")
    run.add_argument("--results-dir", default="results", help="where study folders go (default: results)")
    run.add_argument("--storage", help="Optuna storage URL (default: SQLite in the study folder)")
    run.add_argument(
        "--no-report",
        action="store_true",
        help="write the tables but not the report (e.g. on the workers of a shared study)",
    )
    run.set_defaults(handler=cmd_run)

    report = commands.add_parser("report", help="write report.html, pareto.png, breakdown.png and summary.md")
    report.add_argument("study_dir", metavar="RESULTS_DIR/STUDY")
    report.add_argument("--storage", help="Optuna storage URL (default: the folder's study.db)")
    report.set_defaults(handler=cmd_report)

    exporter = commands.add_parser("export", help="write the chosen trial as a Triton model repository")
    exporter.add_argument("study_dir", metavar="RESULTS_DIR/STUDY")
    exporter.add_argument("--out", required=True, help="model repository folder to write")
    exporter.add_argument(
        "--pick",
        nargs="+",
        default=["knee"],
        metavar="RULE",
        help="knee (default: the Pareto trial nearest the ideal point, objectives scaled to [0, 1] over the front), "
        "'trial N', min:<metric@cN> or max:<metric@cN>",
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
    exporter.set_defaults(handler=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    # The CLI prints each failed trial once, with its reason; Optuna would add a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with _sigterm_unwinds():
            return args.handler(args)
    except SweeperError as exc:
        errors.print(f"sweeper: error: {exc}", markup=False)
        if exc.hint:
            errors.print(f"  hint: {exc.hint}", markup=False)
        return exc.exit_status
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
    except _Terminated:
        errors.print("sweeper: terminated (SIGTERM); servers stopped, results so far are written")
        return 143
    except KeyboardInterrupt:
        errors.print("sweeper: interrupted; servers stopped, results so far are written")
        return 130


if __name__ == "__main__":
    sys.exit(main())
