"""How many servers: a configuration's confirmed capacity turned into a fleet for a target rate.

A server of a configuration sustains its capacity (inferences/s while the latency percentile
stays within the budget); the fleet that serves ``rate`` within the same budget is
``ceil(rate / (lowest * (1 - headroom)))`` servers, where ``lowest`` is the lowest capacity
measured on its fresh servers (not the median: the fleet must hold on its slowest server) and
``headroom`` the fraction of each server's capacity kept spare. Pure: tables in, plain data out.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from sweeper.errors import UsageError
from sweeper.vocabulary import Ranking, is_capacity, metric_words


@dataclasses.dataclass(frozen=True)
class FleetTarget:
    """What the fleet must serve: ``rate`` inferences/s (requests/s at one sample a request),
    with ``headroom`` of each server's capacity spare, at ``cost_per_hour`` a server (optional)."""

    rate: float
    headroom: float = 0.0
    cost_per_hour: float | None = None

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise UsageError(f"--target-rate must be a positive number of inferences/s, got {self.rate:g}")
        if not (0 <= self.headroom < 1):
            raise UsageError(
                f"--headroom must be a fraction in [0, 1) of each server's capacity kept spare, got {self.headroom:g}"
            )
        if self.cost_per_hour is not None and not (self.cost_per_hour > 0 and math.isfinite(self.cost_per_hour)):
            raise UsageError(f"--cost-per-hour must be a positive number, got {self.cost_per_hour:g}")


def servers_needed(rate: float, per_server: float, headroom: float = 0.0) -> int | None:
    """Servers of ``per_server`` capacity that serve ``rate`` with ``headroom`` spare on each;
    None when a server sustains nothing within the budget (no count serves)."""
    usable = per_server * (1 - headroom)
    if usable <= 0:
        return None
    return max(1, math.ceil(round(rate / usable, 9)))  # 1000 / 500 is 2 servers, not 3 by a rounding


@dataclasses.dataclass(frozen=True)
class Fleet:
    """The fleet of one trial's configuration for a target."""

    trial: int
    column: str
    """The capacity it is sized by (``capacity@p99_ms<=60``)."""
    target: FleetTarget
    servers: int | None
    """None: the configuration sustains no load within the budget."""
    lowest: float
    """The lowest capacity its fresh servers measured: what each server is counted for."""
    median: float
    highest: float
    measured: int
    """How many servers measured the capacity (1: unconfirmed, no spread)."""
    load: float
    """The load (concurrency, or requests/s) each server held at its capacity (the median)."""
    closed_loop: bool
    memory_mb: float | None
    """Peak server memory of one server (the median over its measurements)."""
    note: str | None = None
    """The capacity's own note (a lower bound, a client-bound load)."""

    @property
    def total_memory_mb(self) -> float | None:
        """The fleet's server memory in all."""
        return None if self.memory_mb is None or self.servers is None else self.servers * self.memory_mb

    @property
    def cost_per_million(self) -> float | None:
        """What a million inferences cost at the target rate, with ``cost_per_hour`` a server."""
        if self.target.cost_per_hour is None or self.servers is None:
            return None
        return self.servers * self.target.cost_per_hour / (self.target.rate * 3600) * 1e6

    def sentences(self) -> list[str]:
        """The count in words, then what it assumes."""
        if self.servers is None:
            return [
                f"No number of servers of this configuration serves {self.target.rate:,.0f}/s: its "
                f"{metric_words(self.column, unit=False)} is 0."
            ]
        spread = (
            f"each sustained at least {self.lowest:,.0f}/s on {self.measured} fresh servers: "
            f"{self.lowest:,.0f}-{self.highest:,.0f}/s, median {self.median:,.0f}"
            if self.measured > 1
            else f"each counted at {self.lowest:,.0f}/s, measured on one server only (no spread: "
            "study.confirm_repeats measures it again)"
        )
        spare = f"{self.target.headroom:.0%} of each kept spare" if self.target.headroom else "no headroom"
        sentence = (
            f"{self.servers} server{'s' if self.servers > 1 else ''} of this configuration serve "
            f"{self.target.rate:,.0f}/s at {budget_words(self.column)} ({spread}; {spare})"
        )
        if self.memory_mb is not None:
            sentence += f", {self.servers} x {self.memory_mb:,.0f} MB = {self.total_memory_mb:,.0f} MB of server memory"
        if self.cost_per_million is not None:
            sentence += f", {self.cost_per_million:.4g} per million inferences"
        found = [sentence + "."]
        if self.closed_loop:
            found.append(
                f"Measured in closed loop: the count holds while each server has at most {self.load:g} requests "
                "in flight (the concurrency at its capacity); more queue on a server and its latency grows."
            )
        if self.note:
            found.append(f"The capacity's note: {self.note}.")
        return found

    def as_dict(self) -> dict:
        """JSON-ready form, for sweeper-export.json."""
        return {
            **{k: v for k, v in dataclasses.asdict(self).items() if k != "target"},
            **dataclasses.asdict(self.target),
            "total_memory_mb": self.total_memory_mb,
            "cost_per_million": self.cost_per_million,
            "rule": "ceil(rate / (lowest * (1 - headroom)))",
            "sentences": self.sentences(),
        }


def budget_words(column: str) -> str:
    """A capacity's latency budget in words: ``p99 <= 60 ms`` for ``capacity@p99_ms<=60``."""
    return metric_words(column, unit=False).removeprefix("capacity at ")


def sizing_capacity(ranking: Ranking) -> str:
    """The capacity a fleet is sized by: the primary objective where it is a capacity, else the
    first capacity objective; UsageError (naming what to add) when the ranking has none."""
    capacities = [column for column in ranking.columns if is_capacity(column)]
    if not capacities:
        raise UsageError(
            "--target-rate sizes a fleet from capacity at a latency budget, and this study ranks by none "
            f"({', '.join(ranking.columns)})",
            hint="add the objective {metric: capacity, percentile: p99_ms, budget_ms: B, direction: maximize} "
            "(sweeper init --latency-budget B writes it) and run the study",
        )
    return ranking.primary if ranking.primary in capacities else capacities[0]


def fleet_of(row: pd.Series, column: str, target: FleetTarget, *, closed_loop: bool) -> Fleet:
    """The fleet of the trial in ``row`` (a trials.csv row: the capacity's median and its
    ``:lo``/``:hi`` over the trial's fresh servers)."""
    median = float(row[column])
    lowest = _figure(row, f"{column}:lo", median)
    memory = row.get("server_memory_mb")
    note = row.get(f"{column}:note")
    return Fleet(
        trial=int(row["number"]),
        column=column,
        target=target,
        servers=servers_needed(target.rate, lowest, target.headroom),
        lowest=lowest,
        median=median,
        highest=_figure(row, f"{column}:hi", median),
        measured=int(row.get("measured", 1)),
        load=_figure(row, f"{column}:load", 0.0),
        closed_loop=closed_loop,
        memory_mb=None if memory is None or pd.isna(memory) else float(memory),
        note=None if note is None or pd.isna(note) else str(note),
    )


def _figure(row: pd.Series, column: str, default: float) -> float:
    value = row.get(column)
    return default if value is None or pd.isna(value) else float(value)


def front_fleets(
    trials: pd.DataFrame, numbers: list[int], column: str, target: FleetTarget, *, closed_loop: bool
) -> pd.DataFrame:
    """The fleet of each trial in ``numbers``, one row each: servers, capacity counted per
    server, memory per server and in all (and cost per million inferences with a cost)."""
    rows = trials.set_index("number", drop=False)
    fleets = [fleet_of(rows.loc[n], column, target, closed_loop=closed_loop) for n in numbers if n in rows.index]
    frame = pd.DataFrame(
        {
            "number": [f.trial for f in fleets],
            "servers": [f.servers for f in fleets],
            "capacity per server (lowest)": [f.lowest for f in fleets],
            "server_memory_mb": [f.memory_mb for f in fleets],
            "fleet memory (MB)": [f.total_memory_mb for f in fleets],
        }
    )
    if target.cost_per_hour is not None:
        frame["cost per million"] = [f.cost_per_million for f in fleets]
    return frame
