"""Tables, the Pareto/knee selection, the report's computed info and export's choice, on a stored
study written here (no servers) in the layout of a study.db from before trial-record schema
versions (schema 1): what a finished sweep of that release holds, read through sweeper.record."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from sweeper.climb import ClimbingSampler, neighbours, next_neighbour
from sweeper.confirm import enqueue_repeats
from sweeper.errors import UsageError
from sweeper.export import choose, closest, parse_condition
from sweeper.front import (
    TIE_RULE,
    hypervolume,
    indistinguishable,
    knee,
    pareto_front,
    recommend,
    recommendation_sentences,
    reference_point,
)
from sweeper.record import SCHEMA_VERSION, enqueue, read_study
from sweeper.report import collect
from sweeper.report._html import render_html
from sweeper.report._summary import render_summary
from sweeper.results import confidence_sentences, confirmation_candidates, drift, parse_ranking, still_racing, tables
from sweeper.search import UntakenSampler, counted
from sweeper.vocabulary import KNOBS, Bound, Objective, Ranking

SPACE = {
    "max_batch_size": [8],
    "max_queue_delay_us": ["off", 0, 500],
    "instance_count": [1, 2],
    "protocol": ["http", "grpc"],
    "precision": ["fp32", "int8"],
}


def _measurement(level: int, p50: float, throughput: float, batch: float, queue: float) -> dict:
    return {
        "concurrency": level,
        "p50_ms": p50,
        "p90_ms": p50 * 1.2,
        "p95_ms": p50 * 1.3,
        "p99_ms": p50 * 1.5,
        "mean_ms": p50 * 1.1,
        "throughput": throughput,
        "queue_ms": queue,
        "compute_input_ms": 0.01,
        "compute_infer_ms": p50 * 0.5,
        "compute_output_ms": 0.02,
        "server_ms": p50 * 0.8,
        "avg_batch_size": batch,
        "requests": 1000,
        "windows": 3,
        "stable": True,
        "client_cpu": 0.1,
        "client_bound": False,
        "generator": "perf_analyzer",
    }


def _trial(number, delay, protocol, p50, throughput, batch8, *, precision="fp32", cosine=1.0, baseline=False):
    params = {
        "max_batch_size": 8,
        "max_queue_delay_us": delay,
        "instance_count": 1,
        "protocol": protocol,
        "precision": precision,
    }
    return create_trial(
        params=params,
        distributions={k: CategoricalDistribution(v) for k, v in SPACE.items()},
        values=[p50, throughput],
        user_attrs={
            "measurements": [
                _measurement(1, p50, 1000 / p50, 1.0, 0.02 if delay != 500 else 0.5),
                _measurement(8, p50 * 3, throughput, batch8, 0.4),
            ],
            "timings": {"build_s": 0.0, "start_s": 0.3, "measure_s": 9.0, "stop_s": 0.01},
            "cosine_similarity": cosine,
            "max_abs_error": 1 - cosine,
            "reuse": "restart",
            **({"baseline": True} if baseline else {}),
            **({"infeasible": "int8 cosine similarity 0.9 < 0.999"} if cosine < 0.999 else {}),
        },
        constraints={"cosine_similarity": 0.999 - cosine},
    )


@pytest.fixture
def study(tmp_path):
    created = optuna.create_study(
        study_name="stored", storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["minimize", "maximize"]
    )
    created.set_user_attr("objectives", ["p50_ms@c1", "throughput@c8"])
    created.set_user_attr("source", {"kind": "onnx"})
    for trial in [
        _trial(0, 500, "http", 1.0, 900.0, 3.5, baseline=True),
        _trial(1, "off", "http", 0.5, 600.0, 1.0),
        _trial(2, 0, "grpc", 0.6, 1100.0, 2.4),
        _trial(3, 0, "http", 0.55, 1000.0, 2.2, precision="int8", cosine=0.9),
        _trial(4, "off", "grpc", 0.9, 500.0, 1.0),
    ]:
        created.add_trial(trial)
    redrawn = create_trial(
        state=TrialState.FAIL,
        params=dict(created.trials[1].params),
        distributions=created.trials[1].distributions,
        user_attrs={"duplicate_of": 1},
    )
    created.add_trial(redrawn)
    return created


def _info(study, ranking=None):
    record = read_study(study)
    result = tables(record, ranking)
    return collect(result, study_name=record.name, in_process=None, importances={}, reranked=ranking is not None)


def test_tables_keep_off_and_zero_apart_and_leave_redraws_out(study, tmp_path):
    result = tables(read_study(study))
    assert list(result.trials["number"]) == [0, 1, 2, 3, 4] and result.redraws == 1
    assert list(result.trials["max_queue_delay_us"]) == [500, "off", 0, 0, "off"]
    assert set(result.pareto["number"]) == {1, 2}, "the int8 trial is infeasible; 0 and 4 are dominated"
    assert result.trials.loc[3, "infeasible"].startswith("int8 cosine similarity")
    assert list(result.trials.columns[:8]) == ["number", "state", "baseline", *KNOBS]
    assert set(result.measurements["generator"]) == {"perf_analyzer"}
    from sweeper.results import write_tables

    write_tables(result, tmp_path)
    written = pd.read_csv(tmp_path / "trials.csv", dtype={"max_queue_delay_us": str})
    assert list(written["max_queue_delay_us"]) == ["500", "off", "0", "0", "off"]
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left"


def test_front_knee_and_hypervolume():
    frame = pd.DataFrame({"number": [0, 1, 2, 3], "lat": [1.0, 2.0, 3.0, 2.5], "thr": [10.0, 20.0, 30.0, 15.0]})
    front = pareto_front(frame, ["lat", "thr"], ["minimize", "maximize"])
    assert list(front["number"]) == [0, 1, 2]
    assert knee(front, ["lat", "thr"], ["minimize", "maximize"]) == 1
    reference = reference_point(frame[["lat", "thr"]], ["minimize", "maximize"])
    assert reference[0] > 3.0 and reference[1] < 10.0
    whole = hypervolume(front[["lat", "thr"]].to_numpy(), ["minimize", "maximize"], [4.0, 0.0])
    assert whole == pytest.approx(3 * 10 + 2 * 10 + 1 * 10)  # staircase of three boxes
    assert hypervolume(np.array([[5.0, 1.0]]), ["minimize", "maximize"], [4.0, 0.0]) == 0.0


def test_report_info_explains_batching_and_the_gap(study, tmp_path):
    info = _info(study)
    assert info.breakdown_level == "c1" and info.breakdown_load == "concurrency 1"
    assert set(info.breakdown["number"]) == {0, 1, 2}, "the Pareto trials and the baseline"
    assert list(info.batching.columns) == ["c1", "c8"]
    batched = info.batching.loc[[label for label in info.batching.index if label.startswith("#2 ")][0]]
    assert batched["c8"] == pytest.approx(2.4) and batched["c1"] == 1.0
    off = [label for label in info.batching.index if label.startswith("#1 ")][0]
    assert "delay=off" in off and "delay=0us" in info.batching.index[2]
    assert info.baseline["number"] == 0 and info.best_latency["number"] == 1
    assert info.generators == {"perf_analyzer": 5}
    assert info.hypervolume_history is not None and info.hypervolume_history["hypervolume"].is_monotonic_increasing
    summary = render_summary(info)
    assert "## Batching" in summary and "| 1.00 | 3.50 |" in summary
    assert "Measured by perf_analyzer (5 trials)" in summary
    page = render_html(info)
    assert "delay=off" in page and "delay=0us" in page and "average batch size" in page


def test_export_choice_rules(study):
    study = read_study(study)
    assert choose(study, "knee", [])["number"] in (1, 2)
    assert choose(study, "min:p50_ms@c1", [])["number"] == 1
    assert choose(study, "max:throughput@c8", [])["number"] == 2
    assert choose(study, "trial 3", [])["number"] == 3, "a named trial need not be feasible"
    assert choose(study, "knee", ["p50_ms@c1 >= 0.58"])["number"] == 2
    with pytest.raises(UsageError, match="no feasible trial meets") as failure:
        choose(study, "knee", ["p50_ms@c1 <= 0.1"])
    assert "closest: trial 1" in failure.value.hint
    with pytest.raises(UsageError, match="no column 'p51_ms@c1'"):
        parse_condition("p51_ms@c1 <= 3", ["p50_ms@c1"])
    with pytest.raises(UsageError, match="expected '<metric@cN> <op> <number>'"):
        parse_condition("p50_ms@c1 ~ 3", ["p50_ms@c1"])
    frame = pd.DataFrame({"number": [5, 6], "p50_ms@c1": [2.0, 1.5]})
    assert closest(frame, [("p50_ms@c1", "<=", 1.0)]).startswith("trial 6")
    assert json.dumps(choose(study, "knee", []).to_dict(), default=str)


def test_a_study_without_a_feasible_trial_exports_nothing_and_names_each_violation(study):
    from sweeper.errors import SweeperError
    from sweeper.export import chosen
    from sweeper.results import parse_ranking

    record = read_study(study)
    nobody = parse_ranking(record, ["min:p50_ms@c1", "max:throughput@c8"], ["p50_ms@c1 <= 0.1"])
    with pytest.raises(
        SweeperError, match="study 'stored' has no feasible trial to export: trial 0 violates"
    ) as failure:
        chosen(record, "knee", [], nobody)
    assert not isinstance(failure.value, UsageError), "a study's answer, not a usage error: exit 1"
    assert "--pick 'trial N'" in failure.value.hint
    assert chosen(record, "trial 1", [], nobody)[0]["number"] == 1, "a named trial is exported all the same"


def test_a_study_whose_trials_all_failed_has_an_empty_front_with_its_columns(tmp_path):
    created = optuna.create_study(
        study_name="failed", storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["minimize", "maximize"]
    )
    created.set_user_attr("objectives", ["p50_ms@c1", "throughput@c8"])
    failed = create_trial(
        state=TrialState.FAIL,
        params={"max_batch_size": 8},
        distributions={"max_batch_size": CategoricalDistribution([8])},
        user_attrs={"failure": "no"},
    )
    created.add_trial(failed)
    result = tables(read_study(created))
    assert result.pareto.empty and list(result.pareto.columns) == list(result.trials.columns)
    assert result.pareto.sort_values("number").empty


def test_a_schema_1_study_reads_as_records(study):
    record = read_study(study)
    assert record.schema == 1 and record.ranking.columns == ["p50_ms@c1", "throughput@c8"]
    assert record.ranking.directions == ["minimize", "maximize"] and record.ranking.constraints == ()
    trial = record.trial(3)
    assert trial.kind == "complete" and trial.config.precision == "int8" and trial.served_config is None
    assert trial.generator.name == "perf_analyzer" and trial.generator.version is None
    assert trial.accuracy.outside_tolerance.startswith("int8 cosine") and not trial.feasible(record.ranking)
    assert trial.figures["throughput@c8"] == 1000.0 and trial.timings.start_s == 0.3
    assert record.trial(5).kind == "duplicate" and record.trial(5).duplicate_of == 1


def test_a_study_this_sweeper_cannot_read_is_refused_in_one_line(study, tmp_path):
    study.set_user_attr("schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(UsageError, match="written by a newer triton-sweeper") as refused:
        read_study(study)
    assert "upgrade" in refused.value.hint
    other = optuna.create_study(storage=f"sqlite:///{tmp_path / 'other.db'}", study_name="plain")
    with pytest.raises(UsageError, match="not a triton-sweeper study"):
        read_study(other)


def test_a_finished_study_is_re_ranked_without_measuring(study):
    record = read_study(study)
    assert set(tables(record).pareto["number"]) == {1, 2}
    latency_only = Ranking((Objective("p99_ms@c8", "minimize"),))
    assert list(tables(record, latency_only).pareto["number"]) == [1], "p99 at c8 alone: trial 1 (0.5 ms * 3 * 1.5)"
    capped = Ranking((Objective("throughput@c8", "maximize"),), (Bound("p50_ms@c1", "<=", 0.55),))
    result = tables(record, capped)
    assert list(result.pareto["number"]) == [1], "trial 2 (p50 0.6) is infeasible under the new bound"
    assert "violates p50_ms@c1<=0.55" in result.trials.set_index("number").loc[2, "infeasible"]
    assert choose(record, "knee", [], capped)["number"] == 1
    info = _info(study, capped)
    assert info.reranked and "max throughput@c8; feasible when p50_ms@c1<=0.55" in info.ranked_by
    assert "re-ranked from the stored measurements" in render_summary(info)
    parsed = parse_ranking(record, ["max:throughput@c8"], ["p50_ms@c1 <= 0.55"])
    assert parsed == capped
    assert parse_ranking(record, [], []) == record.ranking
    with pytest.raises(UsageError, match="no measured column 'p99_ms@c4'") as refused:
        parse_ranking(record, ["min:p99_ms@c4"], [])
    assert "p99_ms@c8" in refused.value.hint
    with pytest.raises(UsageError, match="expected min:<metric@cN>"):
        parse_ranking(record, ["fastest:p50_ms@c1"], [])
    with pytest.raises(UsageError, match="expected '<metric@cN> <= X'"):
        parse_ranking(record, [], ["p50_ms@c1 < 3"])


def _repeat(of: int, delay, protocol, p50, throughput, *, anchor=False):
    trial = _trial(of, delay, protocol, p50, throughput, 2.0)
    attrs = {**trial.user_attrs, "repeat_of": of, **({"anchor": True} if anchor else {})}
    return create_trial(
        params=trial.params,
        distributions=trial.distributions,
        values=trial.values,
        user_attrs=attrs,
        constraints={"cosine_similarity": 0.0},
    )


def test_confirmed_trials_rank_by_their_medians_with_their_spread(study):
    """Trial 1 (p50 0.5) and trial 2 (0.6) measured again: 2 is 0.45 and 0.5 on its fresh servers,
    1 is 0.7 and 0.8. Medians 0.5 vs 0.7: trial 2 takes trial 1's place on the front."""
    for repeat in (_repeat(2, 0, "grpc", 0.45, 1100.0), _repeat(1, "off", "http", 0.7, 600.0)):
        study.add_trial(repeat)
    for repeat in (_repeat(2, 0, "grpc", 0.5, 1150.0), _repeat(1, "off", "http", 0.8, 590.0)):
        study.add_trial(repeat)
    result = tables(read_study(study))
    trials = result.trials.set_index("number")
    assert list(trials.index) == [0, 1, 2, 3, 4], "repeats are no rows"
    assert trials.loc[2, "p50_ms@c1"] == pytest.approx(0.5) and trials.loc[2, "measured"] == 3
    assert (trials.loc[2, "p50_ms@c1:lo"], trials.loc[2, "p50_ms@c1:hi"]) == pytest.approx((0.45, 0.6))
    assert trials.loc[1, "p50_ms@c1"] == pytest.approx(0.7)
    assert trials.loc[4, "measured"] == 1 and trials.loc[4, "p50_ms@c1:lo"] == trials.loc[4, "p50_ms@c1"]
    assert 1 not in set(result.pareto["number"]) and 2 in set(result.pareto["number"])
    first = tables(read_study(study), confirmed=False)
    assert 1 in set(first.pareto["number"]), "by first measurements trial 1 was on the front"
    assert set(result.measurements["repeat_of"].dropna()) == {1.0, 2.0}, "every repeat's measurements are kept"


def test_a_candidate_beaten_beyond_both_spreads_leaves_the_race_and_the_cap_keeps_the_front(study):
    """Objectives p50@c1 (min) and throughput@c8 (max). After one repeat each: trial 4 (p50
    0.9-0.95, 500/s) is beaten beyond both spreads by trial 2 (0.6-0.62, 1100/s) on both: out.
    Trial 1 (0.5, 600/s) is faster than 2: it stays. The baseline (0) always stays."""
    for repeat in (
        _repeat(1, "off", "http", 0.52, 610.0),
        _repeat(2, 0, "grpc", 0.62, 1090.0),
        _repeat(4, "off", "grpc", 0.95, 510.0),
        _repeat(0, 500, "http", 1.1, 880.0),
    ):
        study.add_trial(repeat)
    record = read_study(study)
    assert still_racing(record, record.ranking, [1, 2, 4, 0]) == [1, 2, 0]
    by_throughput = dataclasses.replace(record.ranking, primary="throughput@c8")
    assert still_racing(record, by_throughput, [1, 2, 4, 0]) == [2, 0], (
        "the pick is made on the primary objective: trial 1 (600-610/s), beaten on it beyond both spreads, leaves"
    )
    everything = confirmation_candidates(read_study(study), record.ranking, margin=10.0)
    assert everything[-1] == 0 and set(everything) >= {1, 2}, everything
    capped = confirmation_candidates(read_study(study), record.ranking, margin=10.0, cap=1)
    assert capped == [everything[0], 0], "the knee first, then the baseline, whatever the cap"


def _rows(**columns) -> pd.DataFrame:
    """Trials as the tables show them: medians with their ``:lo``/``:hi`` (``(median, lo, hi)``
    tuples), confirmed unless ``confirmed`` says otherwise."""
    count = len(columns["number"])
    frame = {
        "baseline": [False] * count,
        "confirmed": [True] * count,
        "instance_count": [1] * count,
        "max_batch_size": [8] * count,
        "server_memory_mb": [100.0] * count,
    }
    for name, values in columns.items():
        if values and isinstance(values[0], tuple):
            frame[name] = [v[0] for v in values]
            frame[f"{name}:lo"] = [v[1] for v in values]
            frame[f"{name}:hi"] = [v[2] for v in values]
        else:
            frame[name] = values
    return pd.DataFrame(frame)


LATENCY_THROUGHPUT = (["p50_ms@c1", "throughput@c8"], ["minimize", "maximize"])
CAPACITY_MEMORY = (["capacity@p99_ms<=10", "server_memory_mb"], ["maximize", "minimize"])


def test_a_lead_within_the_spread_is_a_tie_broken_by_what_was_measured():
    rows = _rows(
        number=[3, 5, 7],
        instance_count=[1, 2, 1],
        server_memory_mb=[120.0, 110.0, 100.0],
        **{
            "p50_ms@c1": [(1.0, 0.9, 1.1), (1.05, 0.95, 1.2), (2.0, 1.9, 2.1)],
            "throughput@c8": [(100.0, 95.0, 105.0), (101.0, 90.0, 106.0), (200.0, 190.0, 210.0)],
        },
    )
    choice = recommend(rows.iloc[:2], *LATENCY_THROUGHPUT)
    assert choice.tied == (5, 3) and choice.rule == TIE_RULE
    assert choice.number == 5, "one best median each: the smaller server memory decides, not the instance count"
    assert indistinguishable(rows, ["p50_ms@c1", "throughput@c8"]) == [(3, 5)]
    assert choice.deciding == (), "no objective tells 3 and 5 apart"
    # With a baseline of 2 instances, trial 5 (2 instances) changes fewer knobs than trial 3 (1):
    # it comes first although trial 3 now uses less memory.
    baseline = _rows(
        number=[0],
        baseline=[True],
        instance_count=[2],
        **{"p50_ms@c1": [(3.0, 2.9, 3.1)], "throughput@c8": [(50.0, 45.0, 55.0)]},
    )
    lighter_3 = rows.iloc[:2].assign(server_memory_mb=[100.0, 120.0])
    assert recommend(lighter_3, *LATENCY_THROUGHPUT).tied == (3, 5), "without a baseline: memory decides"
    assert recommend(pd.concat([lighter_3, baseline]), *LATENCY_THROUGHPUT).tied == (5, 3)
    apart = rows.assign(**{"p50_ms@c1:hi": [1.0, 1.2, 2.1], "p50_ms@c1:lo": [1.0, 1.01, 1.9]})
    alone = recommend(apart.iloc[:2], ["p50_ms@c1"], ["minimize"])
    assert (alone.number, alone.tied) == (3, ()), "a lead beyond both spreads is a lead"


def test_the_baseline_is_kept_when_nothing_beat_it_beyond_its_spread():
    rows = _rows(
        number=[0, 3],
        baseline=[True, False],
        server_memory_mb=[130.0, 120.0],
        **{
            "p50_ms@c1": [(3.66, 3.5, 3.9), (3.89, 3.8, 4.0)],
            "throughput@c8": [(242.0, 230.0, 250.0), (213.0, 200.0, 235.0)],
        },
    )
    choice = recommend(rows, *LATENCY_THROUGHPUT)
    assert choice.number == 0 and choice.baseline_kept and choice.rule is None
    cheaper = rows.assign(**{"p50_ms@c1": [3.66, 3.6], "throughput@c8": [242.0, 245.0]})
    choice = recommend(cheaper, *LATENCY_THROUGHPUT)
    assert choice.knee == 3 and choice.number == 0 and choice.baseline_kept, "a lead inside the baseline's spread"
    sentences = recommendation_sentences(choice, cheaper, LATENCY_THROUGHPUT[0])
    assert sentences[0].startswith("No configuration measurably beat the baseline on p50_ms@c1, throughput@c8")


def test_a_trial_measured_once_never_wins():
    rows = _rows(
        number=[0, 20, 21],
        baseline=[True, False, False],
        confirmed=[True, False, True],
        **{
            "p50_ms@c1": [(3.0, 2.9, 3.1), (2.0, 2.0, 2.0), (2.5, 2.4, 2.6)],
            "throughput@c8": [(100.0, 95.0, 105.0), (200.0, 200.0, 200.0), (150.0, 140.0, 160.0)],
        },
    )
    choice = recommend(rows, *LATENCY_THROUGHPUT)
    assert choice.number == 21 and choice.pool == "confirmed", "trial 20 dominates on one measurement only"
    unconfirmed = recommend(rows.assign(confirmed=False), *LATENCY_THROUGHPUT)
    assert unconfirmed.number == 20 and unconfirmed.pool == "feasible", "without confirmation every trial counts"


def test_memory_noise_never_outweighs_a_capacity_beaten_beyond_both_spreads():
    """The issue's figures: max_batch_size 32 sustained 7,719-8,111/s at 125.4-126.0 MB,
    max_batch_size 1 1,707-1,874/s at 122.8-123.4 MB; min-max scaling picked the latter."""
    rows = _rows(
        number=[1, 2, 3],
        max_batch_size=[1, 32, 8],
        baseline=[True, False, False],
        **{
            "capacity@p99_ms<=10": [(1790.0, 1707.0, 1874.0), (7900.0, 7719.0, 8111.0), (4397.0, 1119.0, 5541.0)],
            "server_memory_mb": [(123.1, 122.8, 123.4), (125.7, 125.4, 126.0), (124.1, 124.0, 124.2)],
        },
    )
    choice = recommend(rows, *CAPACITY_MEMORY)
    assert choice.number == 2 and not choice.baseline_kept and choice.tied == ()
    why = " ".join(recommendation_sentences(choice, rows, CAPACITY_MEMORY[0]))
    assert "4.4x capacity@p99_ms<=10" in why and "2.1% more server_memory_mb" in why, why
    primary = recommend(rows, *CAPACITY_MEMORY, primary="server_memory_mb")
    assert primary.number == 1 and primary.baseline_kept, "memory first: the baseline is the front's smallest"


def test_a_primary_lead_inside_the_spread_leaves_the_choice_to_the_other_objectives():
    """The encoder of the pick issue's runs: trial 8 (2 instances) led on capacity by its median,
    3,019/s (2,284-3,076) against trial 2's 2,852/s (2,635-2,895), for 193 MB against 116 MB.
    Capacity is primary, but it cannot tell them apart: memory decides, trial 2."""
    rows = _rows(
        number=[0, 2, 8],
        baseline=[True, False, False],
        instance_count=[1, 1, 2],
        **{
            "capacity@p99_ms<=20": [(1150.0, 1100.0, 1200.0), (2852.0, 2635.0, 2895.0), (3019.0, 2284.0, 3076.0)],
            "server_memory_mb": [(110.0, 109.0, 111.0), (115.6, 115.0, 116.0), (193.3, 193.0, 194.0)],
        },
    )
    objectives = (["capacity@p99_ms<=20", "server_memory_mb"], ["maximize", "minimize"])
    choice = recommend(rows, *objectives, primary="capacity@p99_ms<=20")
    assert (choice.number, choice.tied, choice.baseline_kept) == (2, (), False)
    apart = rows.assign(**{"capacity@p99_ms<=20:lo": [1100.0, 2635.0, 2990.0]})
    assert recommend(apart, *objectives, primary="capacity@p99_ms<=20").number == 8, "a lead beyond both spreads"


def test_an_objective_inside_the_spread_does_not_decide():
    rows = _rows(
        number=[4, 6],
        **{
            "capacity@p99_ms<=10": [(5000.0, 4800.0, 5200.0), (5100.0, 4900.0, 5300.0)],
            "server_memory_mb": [(120.0, 119.0, 121.0), (150.0, 149.0, 151.0)],
        },
    )
    choice = recommend(rows, *CAPACITY_MEMORY)
    assert choice.deciding == ("server_memory_mb",) and choice.number == 4


def test_candidates_are_the_knee_the_front_the_near_ones_and_the_baseline(study):
    record = read_study(study)
    candidates = confirmation_candidates(record, record.ranking, margin=0.0)
    front = set(tables(record).pareto["number"])
    assert set(candidates) == front | {0}, "the front and the baseline"
    assert candidates[0] == knee(tables(record).pareto, ["p50_ms@c1", "throughput@c8"], ["minimize", "maximize"])
    wide = confirmation_candidates(record, record.ranking, margin=0.5)
    assert set(wide) == {0, 1, 2, 4}, (
        "a 50 % margin brings the dominated feasible trial 4 near the front (3 is int8-infeasible)"
    )


def test_drift_is_the_baselines_anchors_against_its_first_measurement(study):
    assert drift(read_study(study)) is None, "no anchor"
    study.add_trial(_repeat(0, 500, "http", 1.3, 900.0, anchor=True))
    moved = drift(read_study(study))
    assert moved.anchors["p50_ms@c1:change"].iloc[0] == pytest.approx(0.3)
    assert moved.beyond == [], "no repeats: no spread to hold it to"
    study.add_trial(_repeat(0, 500, "http", 1.05, 900.0))
    moved = drift(read_study(study))
    assert moved.spread["p50_ms@c1"] == pytest.approx(0.05 / 1.025), "first 1.0 and its repeat 1.05"
    assert moved.beyond == ["p50_ms@c1"], "the anchor's +30 % is beyond that"
    assert "baseline (trial 0) re-measured" in moved.describe()


def test_trials_measured_once_before_a_drifted_anchor_are_flagged(study):
    """Trials 1-4 ran before the anchor (trial 6) that found the baseline 30 % slower, beyond
    the 5 % its repeat showed; trial 8 ran after it, trial 2's median is over repeats run at the
    end, and the baseline is the reference itself."""
    study.add_trial(_repeat(0, 500, "http", 1.3, 900.0, anchor=True))
    study.add_trial(_repeat(0, 500, "http", 1.05, 900.0))
    study.add_trial(_trial(8, "off", "grpc", 0.8, 700.0, 1.0))
    study.add_trial(_repeat(2, 0, "grpc", 0.62, 1090.0))
    result = tables(read_study(study))
    flagged = result.trials.set_index("number")["drift"]
    assert flagged.dropna().to_dict() == {n: "p50_ms@c1 +30.0%" for n in (1, 3, 4)}
    sentences = confidence_sentences(result)
    assert any(s.startswith("Trial(s) 1, 3, 4 were measured once") for s in sentences), sentences
    assert tables(read_study(study), confirmed=False).trials["drift"].isna().all(), "first measurements: no medians"


def test_repeats_are_enqueued_interleaved_and_only_the_missing_ones(study):
    enqueue_repeats(study, [2, 4, 1], repeats=2)
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert [t.user_attrs["repeat_of"] for t in waiting] == [2, 4, 1, 2, 4, 1], "A B C A B C"
    assert enqueue_repeats(study, [2, 4, 1], repeats=2) == 0, "resuming adds nothing measured or waiting"
    assert enqueue_repeats(study, [2, 4, 1], repeats=3) == 3


def _neighbours_enqueued(study, ranking) -> list[tuple[int, dict]]:
    """The climb's picks until none is left, each enqueued (a waiting configuration is not
    picked again): the trial each one surrounds, and its move from it."""
    picked = []
    while (found := next_neighbour(study.get_trials(), SPACE, ranking)) is not None:
        params, origin = found
        enqueue(study, params, neighbour_of=origin)
        picked.append((origin, {k: v for k, v in params.items() if v != study.trials[origin].params[k]}))
    return picked


def test_a_knob_of_numbers_moves_one_step_and_a_knob_of_words_to_any_other_value():
    space = {"max_batch_size": [1, 8, 32], "max_queue_delay_us": ["off", 0, 500], "precision": ["fp32", "fp16", "int8"]}
    origin = {"max_batch_size": 1, "max_queue_delay_us": 0, "precision": "fp32"}
    moves = [{k: v for k, v in config.items() if v != origin[k]} for config in neighbours(space, origin)]
    assert moves == [
        {"max_batch_size": 8},
        {"max_queue_delay_us": "off"},
        {"max_queue_delay_us": 500},
        {"precision": "fp16"},
        {"precision": "int8"},
    ], "FP32 is not nearer INT8 through FP16"


def test_the_knees_untried_neighbours_come_first_then_the_next_front_trials(study):
    """The knee by first measurements is trial 2 (delay 0, 1 instance, gRPC, FP32). Its neighbours:
    delay off (trial 4 has it) or 500, 2 instances, HTTP, INT8. A value no feasible trial has (2
    instances; INT8, whose only trial failed the accuracy guard) comes first; then the one
    predicted nearest the ideal (HTTP: faster and busier than gRPC where both ran, delay off).
    With none left, trial 1, the other front trial, has its neighbours measured (its delay 0 is
    the knee's HTTP neighbour, waiting already)."""
    ranking = read_study(study).ranking
    picked = _neighbours_enqueued(study, ranking)
    assert picked == [
        (2, {"instance_count": 2}),
        (2, {"precision": "int8"}),
        (2, {"protocol": "http"}),
        (2, {"max_queue_delay_us": 500}),
        (1, {"instance_count": 2}),
        (1, {"precision": "int8"}),
    ]


def test_a_values_promise_is_read_with_the_other_knobs_held(tmp_path):
    """INT8 was measured once, with a 500 us queue delay: 1.4 ms, slower than the knee (delay 0:
    0.6 ms). Read as it is, INT8 looks worse than HTTP (0.7 ms, measured with no batcher). Read
    against FP32 with the same delay (1.5 ms, 1,000/s), INT8 is faster and busier: the knee's
    INT8 neighbour comes before its HTTP one."""
    created = optuna.create_study(
        study_name="held", storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["minimize", "maximize"]
    )
    created.set_user_attr("objectives", ["p50_ms@c1", "throughput@c8"])
    created.set_user_attr("source", {"kind": "onnx"})
    for number, delay, protocol, p50, throughput, precision in (
        (0, 0, "grpc", 0.6, 1100.0, "fp32"),
        (1, 500, "grpc", 1.5, 1000.0, "fp32"),
        (2, 500, "grpc", 1.4, 1150.0, "int8"),
        (3, "off", "http", 0.7, 600.0, "fp32"),
        (4, "off", "grpc", 0.65, 550.0, "fp32"),
    ):
        created.add_trial(_trial(number, delay, protocol, p50, throughput, 2.0, precision=precision))
    picked = _neighbours_enqueued(created, read_study(created).ranking)
    assert picked[:3] == [(0, {"instance_count": 2}), (0, {"precision": "int8"}), (0, {"protocol": "http"})]


def test_a_confirmed_capacity_is_the_median_of_its_measurements(tmp_path):
    """The issue's trial 16: capacities 1,326, 3,997 and 3,641/s on three servers; the tables
    showed the first (1,326) beside a spread of 1,326-3,997."""
    column = "capacity@p99_ms<=10"

    def with_capacity(trial, throughput, load):
        found = {"column": column, "load": load, "throughput": throughput, "tried": [1, load]}
        attrs = {**trial.user_attrs, "capacities": [found]}
        values = trial.values
        return create_trial(
            params=trial.params,
            distributions=trial.distributions,
            values=values,
            user_attrs=attrs,
            constraints={"cosine_similarity": 0.0},
        )

    target = optuna.create_study(
        study_name="capacity", storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["maximize", "minimize"]
    )
    target.set_user_attr("objectives", [column, "server_memory_mb"])
    first = with_capacity(_trial(2, 0, "grpc", 0.6, 1100.0, 2.4), 1326.0, 4)
    first.user_attrs["memory"] = {"server_mb": 120.0}
    target.add_trial(first)
    for throughput, load in ((3997.0, 16), (3641.0, 12)):
        repeat = with_capacity(_repeat(0, 0, "grpc", 0.6, 1100.0), throughput, load)
        repeat.user_attrs.update(repeat_of=0, memory={"server_mb": 121.0})
        target.add_trial(repeat)
    row = tables(read_study(target)).trials.set_index("number").loc[0]
    assert (row[column], row[f"{column}:lo"], row[f"{column}:hi"]) == (3641.0, 1326.0, 3997.0)
    assert row[f"{column}:load"] == 12.0 and row["measured"] == 3 and row["confirmed"]


def test_the_capacity_sentence_names_the_load_found_not_one_its_retakes_outvoted():
    """c8 held on the search's measurement and broke the budget in both retakes; the search went
    on below it and found c6, whose retakes held: the sentence names c6 and its three takes, also
    where c6 was first measured as a level the spec lists (the search reuses it)."""
    from sweeper.results import StudyTables, capacity_sentence

    column = "capacity@p99_ms<=60"
    trials = pd.DataFrame({"number": [0], column: [180.0], f"{column}:lo": [170.0], f"{column}:hi": [190.0]})
    rows = [  # level, p99, throughput, verdict, retake
        ("c4", 40.0, 150.0, "within by its point estimate", None),
        ("c8", 58.0, 220.0, "within by its point estimate", None),
        ("c8", 70.0, 175.0, "over by its point estimate", 1),
        ("c8", 66.0, 178.0, "over by its point estimate", 2),
        ("c6", 51.0, 181.0, "within by its point estimate", None),
        ("c6", 52.0, 180.0, "within by its point estimate", 1),
        ("c6", 64.0, 172.0, "over by its point estimate", 2),
    ]
    measurements = pd.DataFrame(rows, columns=["level", "p99_ms", "throughput", "verdict", "retake"]).assign(
        number=0,
        search=column,
        remeasured=None,
        requests=400,
        request_rate=None,
        concurrency=lambda f: f["level"].str[1:].astype(int),
    )

    def sentence(measured):
        result = StudyTables(trials.assign(measured=3), measured, pd.DataFrame(), [column], 0, None, None)
        return capacity_sentence(result, 0, column)

    assert sentence(measurements) == (
        "Trial 0: capacity@p99_ms<=60 180/s (170-190/s over 3 servers); decided at c6 on its first server: "
        "p99_ms 51 ms from 400 requests (within by its point estimate), its figure there the median of 3 "
        "measurements."
    )
    listed = measurements.assign(search=[column] * 4 + [None] + [column] * 2)  # c6 measured as a listed level first
    assert sentence(listed) == sentence(measurements), "the search started from a listed level's measurement"
    outvoted_to_nothing = measurements[measurements["level"] == "c8"]
    assert sentence(outvoted_to_nothing) == "Trial 0: capacity@p99_ms<=60 180/s (170-190/s over 3 servers)."


def test_large_responses_and_a_generator_memory_limit_are_said():
    from sweeper.results import client_sentences

    rows = pd.DataFrame(
        {
            "number": [0, 0, 1],
            "level": ["c1", "c4", "c4"],
            "response_bytes": [3 * 2**20, 3 * 2**20, 3 * 2**20],
            "response_mb_s": [300.0, 960.0, 900.0],
            "client_bound": [False, True, False],
            "note": [None, "perf_analyzer held 900 MB, over its memory limit of 800 MB", None],
        }
    )
    large, limit = client_sentences(rows)
    assert large.startswith(
        "Responses carry up to 3 MiB of outputs each: the client read up to 960 MiB/s (trial 0 at c4)"
    )
    assert "flagged the bottleneck at 1 of 3 loads" in large
    assert "in trial(s) 0: 1 load(s) were measured by the built-in client instead" in limit
    small = rows.assign(response_bytes=1000, note=None)
    assert client_sentences(small) == [], "small responses and no limit reached: nothing to say"


@pytest.mark.parametrize("base", [optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0)])
def test_the_climb_is_a_sampler_around_any_other(study, base):
    """Wrapping another sampler: a trial that climbs is proposed the knee's neighbour (as
    ``next_neighbour`` picks it) and marked ``neighbour_of``, in the storage and on the trial;
    before the climb's turn, the wrapped sampler proposes and nothing is marked."""
    ranking = read_study(study).ranking
    done = counted(study.get_trials())

    def ask(climb_from: int) -> optuna.Trial:
        sampler = ClimbingSampler(UntakenSampler(base, SPACE, 0), SPACE, ranking, climb_from)
        loaded = optuna.load_study(study_name="stored", storage=study._storage, sampler=sampler)
        trial = loaded.ask()
        for name in SPACE:
            trial.suggest_categorical(name, SPACE[name])
        return trial

    expected, origin = next_neighbour(study.get_trials(), SPACE, ranking)
    climbed = ask(climb_from=done)
    assert climbed.params == expected and origin == 2
    assert climbed.user_attrs["neighbour_of"] == 2 and study.trials[-1].user_attrs["neighbour_of"] == 2
    study.tell(climbed, state=TrialState.FAIL)
    sampled = ask(climb_from=done + 1)
    assert "neighbour_of" not in sampled.user_attrs and "neighbour_of" not in study.trials[-1].user_attrs
