"""The command line: ``sweeper run | report | export``.

Strings from the spec become launcher classes here, and library errors are translated once,
here, into one line plus a hint with exit status 2 (bad input) or 1 (a run that failed).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import Iterator, Sequence

import optuna
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sweeper.errors import SweeperError
from sweeper.export import export
from sweeper.launchers import DockerLauncher, Launcher, LocalLauncher
from sweeper.report import write_report
from sweeper.results import StudyTables, tables, write_tables
from sweeper.spec import KNOBS, LoadedSpec, load_spec
from sweeper.study import LABEL_STUDY, default_storage, open_storage, open_stored_study, run_study, storage_label, study_dir

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


def make_launcher(loaded: LoadedSpec, directory: Path) -> Launcher:
    server = loaded.spec.server
    if server.launcher == "docker":
        return DockerLauncher(server)
    return LocalLauncher(
        directory,
        tritonserver=server.tritonserver,
        backend_directory=server.backend_directory,
        address=server.address,
        startup_timeout_s=server.startup_timeout_s,
    )


def _trial_line(trial: optuna.trial.FrozenTrial, objectives: list[str], total: int) -> str:
    p = trial.params
    knobs = (
        f"mbs={p.get('max_batch_size')} delay={p.get('max_queue_delay_us')}us "
        f"inst={p.get('instance_count')} {p.get('protocol')} {p.get('precision')}"
    )
    head = f"trial {trial.number + 1}/{total}{' (baseline)' if trial.user_attrs.get('baseline') else ''}  {knobs}"
    if trial.state != optuna.trial.TrialState.COMPLETE:
        return f"{head}  [red]FAILED[/red]: {escape(trial.user_attrs.get('failure', 'interrupted'))}"
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
    table = Table(title=f"Pareto front of '{study_name}' ({len(result.pareto)} of {len(result.trials)} trials)")
    columns = ["number", *KNOBS, *result.objectives]
    for column in columns:
        table.add_column(column, justify="right")
    for values in result.pareto.sort_values("number").to_dict("records"):
        mark = " (baseline)" if values["baseline"] else ""
        table.add_row(*[_cell(values[c]) + (mark if c == "number" else "") for c in columns])
    console.print(table)
    if result.pareto.empty:
        console.print("[yellow]No feasible completed trial: see trials.csv for failures and constraint violations.[/yellow]")


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _stored_study(name: str, storage: optuna.storages.RDBStorage) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_spec(Path(args.spec), study_name=args.study, trials=args.trials)
    directory = study_dir(Path(args.results_dir), loaded.name)
    storage_url = args.storage or loaded.spec.study.storage or default_storage(directory)
    storage_label(storage_url)  # a malformed URL is bad input: refused before anything starts
    launcher = make_launcher(loaded, directory)
    total = loaded.spec.study.trials
    objectives = [o.column for o in loaded.spec.objectives]
    console.print(f"study '{loaded.name}': {total} trials, results in {directory}")
    launcher.preflight()
    removed = launcher.remove_leftovers({LABEL_STUDY: loaded.name})
    if removed:
        console.print(f"removed {removed} container(s) that an earlier run of '{loaded.name}' left behind")
    directory.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url)

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("trials", total=total)

        def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            progress.console.print(_trial_line(trial, objectives, total))
            progress.update(task, completed=min(trial.number + 1, total))
            write_tables(tables(study), directory)

        try:
            run_study(loaded, launcher, directory, storage, on_trial_end=on_trial_end)
        finally:
            # Also after Ctrl-C or a crash: the tables show every trial that finished.
            study = _stored_study(loaded.name, storage)
            if study is not None:
                result = tables(study)
                write_tables(result, directory)
    print_pareto(loaded.name, result)
    console.print(f"wrote {directory / 'trials.csv'}, measurements.csv, pareto.csv")
    if (result.trials["state"] == "COMPLETE").any():
        _report(study, directory)
    else:
        console.print("[yellow]no completed trial, so no report: trials.csv says why each failed[/yellow]")
    return 0


def _report(study: optuna.Study, directory: Path) -> None:
    info = write_report(study, directory)
    if info.running:
        console.print(f"[yellow]{info.running} trial(s) still running: the report shows the finished ones[/yellow]")
    console.print(f"report: {directory / 'report.html'} (also pareto.png, breakdown.png, summary.md)")


def cmd_report(args: argparse.Namespace) -> int:
    directory = Path(args.study_dir)
    study = open_stored_study(directory, args.storage)
    write_tables(tables(study), directory)
    _report(study, directory)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    directory = Path(args.study_dir)
    study = open_stored_study(directory, args.storage)
    pick = " ".join(args.pick)
    exported = export(study, directory, Path(args.out), pick=pick, where=args.where, backend=args.backend)
    params = exported.config
    console.print(f"exported trial {exported.trial} ({pick}) to {exported.model_dir}")
    console.print(
        f"  max_batch_size={params.max_batch_size} max_queue_delay_us={params.max_queue_delay_us} "
        f"instance_count={params.instance_count} precision={params.precision} backend={args.backend}"
    )
    console.print(f"  clients should use [bold]{params.protocol.upper()}[/bold]: the protocol is client-side, not in config.pbtxt")
    console.print(exported.pbtxt, markup=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweeper", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) a sweep from a YAML spec")
    run.add_argument("spec", help="the YAML spec")
    run.add_argument("--trials", type=int, help="total trials of the study (overrides study.trials)")
    run.add_argument("--study", help="study name (overrides study.name)")
    run.add_argument("--results-dir", default="results", help="where study folders go (default: results)")
    run.add_argument("--storage", help="Optuna storage URL (default: SQLite in the study folder)")
    run.set_defaults(handler=cmd_run)

    report = commands.add_parser("report", help="write report.html, pareto.png, breakdown.png and summary.md")
    report.add_argument("study_dir", metavar="RESULTS_DIR/STUDY")
    report.add_argument("--storage", help="Optuna storage URL (default: the folder's study.db)")
    report.set_defaults(handler=cmd_report)

    exporter = commands.add_parser("export", help="write the chosen trial as a Triton model repository")
    exporter.add_argument("study_dir", metavar="RESULTS_DIR/STUDY")
    exporter.add_argument("--out", required=True, help="model repository folder to write")
    exporter.add_argument(
        "--pick", nargs="+", default=["knee"], metavar="RULE",
        help="knee (default: the Pareto trial nearest the ideal point, objectives scaled to [0, 1] over the front), "
        "'trial N', min:<metric@cN> or max:<metric@cN>",
    )
    exporter.add_argument("--where", action="append", default=[], metavar="COND",
                          help="'<metric@cN> <= X' (also >=, <, >, ==); repeatable")
    exporter.add_argument("--backend", choices=["onnxruntime", "python"], default="onnxruntime")
    exporter.add_argument("--storage", help="Optuna storage URL (default: the folder's study.db)")
    exporter.set_defaults(handler=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
    except _Terminated:
        errors.print("sweeper: terminated (SIGTERM); servers stopped, results so far are written")
        return 143
    except KeyboardInterrupt:
        errors.print("sweeper: interrupted; servers stopped, results so far are written")
        return 130


if __name__ == "__main__":
    sys.exit(main())
