"""What confirmation costs and what a cap on its candidates would have changed, read from a
finished study (nothing is measured): the candidates the study confirmed, the repeat runs they
took, and for each cap (``study.confirm_candidates``) the repeat runs it would have kept and
whether the confirmed front and the recommendation stay those of the whole confirmation.
Candidates are chosen with the spec's ``load.stability_tolerance`` when its file is still where
the study recorded it (0.15 otherwise).

A cap keeps the first candidates in the order confirmation chooses them (the knee, the front,
then the trials near it; the baseline always): the study is read again with the other
candidates' repeats left out, as if they had never been measured. The race is replayed too:
after each candidate's first repeat, ``still_racing`` (today's rule, a primary objective's
included) says which would have been measured no more; their later repeats are left out.

    .venv/bin/python benchmarks/confirmation_cost.py RESULTS/STUDY [--storage URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeper.record import StudyRecord, read_study
from sweeper.results import confirmation_candidates, still_racing, study_recommendation, tables
from sweeper.spec import LoadSpec, read_yaml


def without_repeats_of(record: StudyRecord, dropped: set[int]) -> StudyRecord:
    """``record`` as if the repeats of the ``dropped`` trials had never been measured."""
    kept = tuple(t for t in record.trials if t.repeat_of not in dropped or t.anchor)
    return dataclasses.replace(record, trials=kept)


def after_first_round(record: StudyRecord) -> StudyRecord:
    """``record`` with each candidate's first repeat only (anchors kept)."""
    seen: set[int] = set()
    kept = []
    for trial in sorted(record.trials, key=lambda t: t.number):
        if trial.repeat_of is not None and not trial.anchor:
            if trial.repeat_of in seen:
                continue
            seen.add(trial.repeat_of)
        kept.append(trial)
    return dataclasses.replace(record, trials=tuple(kept))


def raced(record: StudyRecord, candidates: list[int]) -> tuple[StudyRecord, list[int]]:
    """``record`` as today's race would have left it: the candidates out after the first round
    keep their first repeat only. Returns it and those candidates."""
    first = after_first_round(record)
    racing = still_racing(first, record.ranking, candidates)
    out = [n for n in candidates if n not in racing]
    first_repeats = {t.number for t in first.trials if t.repeat_of in out}
    kept = tuple(t for t in record.trials if t.repeat_of not in out or t.anchor or t.number in first_repeats)
    return dataclasses.replace(record, trials=kept), out


def outcome(record: StudyRecord) -> tuple[list[int], int]:
    """The confirmed front (trial numbers) and the recommendation."""
    result = tables(record)
    return sorted(int(n) for n in result.pareto["number"]), study_recommendation(result).number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a study's results folder (holding study.db)")
    parser.add_argument("--storage", help="the study's storage URL when it is not the folder's study.db")
    args = parser.parse_args()
    storage = args.storage or f"sqlite:///{args.folder / 'study.db'}"
    study = optuna.load_study(study_name=args.folder.name, storage=storage)
    record = read_study(study)
    spec = Path(record.facts.get("spec", ""))  # the spec's path, as the study recorded it
    load = (read_yaml(spec).get("load") or {}) if spec.is_file() else {}
    margin = LoadSpec(stability_tolerance=load.get("stability_tolerance", 0.15)).settings.confirmation_margin
    candidates = confirmation_candidates(record, record.ranking, margin)
    baseline = [t.number for t in record.trials if t.baseline and t.repeat_of is None]
    repeats = [t for t in record.trials if t.repeat_of is not None and not t.anchor]
    front, pick = outcome(record)
    print(
        f"{args.folder.name}: {len(candidates) - len(baseline)} candidates and the baseline, {len(repeats)} repeat "
        f"runs; confirmed front {front}, recommendation trial {pick}"
    )
    repeat_runs = len(repeats)

    def against_whole(variant: StudyRecord) -> str:
        runs = sum(t.repeat_of is not None and not t.anchor for t in variant.trials)
        front_variant, pick_variant = outcome(variant)
        same = "same front and pick" if (front_variant, pick_variant) == (front, pick) else "differs"
        return (
            f"{runs} repeat runs ({runs / repeat_runs:.0%}); front {front_variant}, "
            f"recommendation trial {pick_variant}: {same}"
        )

    race, out = raced(record, candidates)
    print(f"  today's race: trials {out} out after their first repeat; {against_whole(race)}")
    others = [n for n in candidates if n not in baseline]
    for cap in range(1, len(others) + 1):
        print(f"  confirm_candidates: {cap}: {against_whole(without_repeats_of(record, set(others[cap:])))}")


if __name__ == "__main__":
    main()
