"""The trial record written through TrialWriter on a real Optuna study, read back through
sweeper.record, and seen by Optuna's own tools: optuna-dashboard's API (its WSGI app, called in
this process) names the objectives and gets each trial's feasibility, and Optuna's best_trials
leaves an infeasible trial off the front."""

from __future__ import annotations

import io
import json
import wsgiref.util

import optuna
from optuna.distributions import CategoricalDistribution

from sweeper.measured import Accuracy, Capacity, LoadGeneratorInfo, Measurement
from sweeper.record import TrialWriter, read_study, write_study_facts
from sweeper.vocabulary import KNOBS, Bound, Objective, Ranking

RANKING = Ranking(
    (Objective("p50_ms@c1", "minimize"), Objective("throughput@c1", "maximize")), (Bound("p99_ms@c1", "<=", 5.0),)
)
CONFIG = {"max_batch_size": 8, "max_queue_delay_us": 0, "instance_count": 1, "protocol": "http", "precision": "int8"}


def _measurement(p50: float, throughput: float) -> Measurement:
    return Measurement(
        1,
        p50,
        p50,
        p50,
        p50 * 2,
        p50,
        throughput,
        0.1,
        0.0,
        p50 / 2,
        0.0,
        p50,
        1.0,
        100,
        3,
        True,
        0.1,
        False,
        "builtin",
    )


def _sweep(tmp_path) -> optuna.Study:
    study = optuna.create_study(
        study_name="named", storage=f"sqlite:///{tmp_path / 'study.db'}", directions=RANKING.directions
    )
    write_study_facts(study, RANKING, {"backend": "python", "source": {"kind": "onnx"}})
    for p50, cosine in ((1.0, 1.0), (0.5, 0.9)):  # the second is faster but fails the accuracy guard
        trial = study.ask({k: CategoricalDistribution([v]) for k, v in CONFIG.items()})
        writer = TrialWriter(trial)
        writer.started("restart", LoadGeneratorInfo("builtin", "0.1.0"), {"cpus": 2})
        writer.served('name: "m"\nmax_batch_size: 8\n')
        writer.accuracy(Accuracy(1 - cosine, cosine, None if cosine == 1.0 else "int8 cosine similarity 0.9 < 0.999"))
        measured = [_measurement(p50, 1000 / p50)]
        capacity = Capacity("capacity@p99_ms<=5", 4.0, 4000 / p50, (1.0, 2.0, 4.0, 8.0, 6.0, 5.0), None)
        writer.measured(measured, [capacity], {"cosine_similarity": 0.999 - cosine, "p99_ms@c1<=5": p50 * 2 - 5})
        writer.timings({"build_s": 0.1, "start_s": 0.2, "measure_s": 1.0, "stop_s": 0.0})
        study.tell(trial, [p50, 1000 / p50])
    return study


def _dashboard(storage, path: str) -> dict:
    from optuna_dashboard import wsgi

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    seen = {}
    body = b"".join(wsgi(storage)(environ, lambda status, headers, *_: seen.update(status=status)))
    assert seen["status"].startswith("200"), seen
    return json.loads(body)


def test_what_the_writer_stores_reads_back_as_a_record(tmp_path):
    record = read_study(_sweep(tmp_path))
    assert record.ranking == RANKING and record.facts["backend"] == "python"
    first, second = record.trials
    assert first.config.as_dict() == CONFIG and first.served_config.startswith('name: "m"')
    assert first.generator == LoadGeneratorInfo("builtin", "0.1.0") and first.machine == {"cpus": 2}
    assert first.measurements[0].p50_ms == 1.0 and first.timings.measure_s == 1.0 and first.reuse == "restart"
    assert first.feasible(RANKING) and not second.feasible(RANKING)
    assert second.violations(RANKING) == {"cosine_similarity": second.constraints["cosine_similarity"]}
    assert not second.feasible(Ranking(RANKING.objectives)), "the accuracy guard holds under any ranking"
    tight = Ranking(RANKING.objectives, (Bound("p99_ms@c1", "<=", 1.5),))
    assert not first.feasible(tight) and first.violations(tight) == {"p99_ms@c1<=1.5": 0.5}
    assert set(KNOBS) == set(first.config.as_dict())
    assert first.capacities[0].tried == (1.0, 2.0, 4.0, 8.0, 6.0, 5.0) and first.capacities[0].load == 4.0
    assert first.figures["capacity@p99_ms<=5"] == 4000.0, "a capacity's figure is its throughput"


def test_optunas_own_tools_see_names_and_feasibility(tmp_path):
    study = _sweep(tmp_path)
    assert [t.number for t in study.best_trials] == [0], "the infeasible trial is off Optuna's front"
    detail = _dashboard(study._storage, f"/api/studies/{study._study_id}")
    assert detail["objective_names"] == ["p50_ms@c1", "throughput@c1"]
    constraints = {trial["number"]: trial["constraints"] for trial in detail["trials"]}
    assert all(v <= 0 for v in constraints[0]) and any(v > 0 for v in constraints[1])
