"""All result tables: the four of cgar.report.tables plus time_to_target, claims and halting (cgar.report.TABLES).

Kept apart from cgar.report.tables because the newer tables build on its statistics (Stat, paired, Table), so
the assembly of all of them sits one level above both.
"""

from __future__ import annotations

import pandas as pd

from cgar.report import DEFAULT_BASELINE, DEFAULT_BASELINE_FRACTIONS, TABLES
from cgar.report.claims import claims_table, halting_table
from cgar.report.collect import Run
from cgar.report.tables import Table, build_tables, experiments_in_order
from cgar.report.time_to_target import targets, time_to_target_frame, time_to_target_table


def all_tables(summary: pd.DataFrame, runs: list[Run], baseline: str = DEFAULT_BASELINE,
               absolute_targets: tuple[float, ...] = (),
               baseline_fractions: tuple[float, ...] = DEFAULT_BASELINE_FRACTIONS) -> dict[str, Table]:
    tables = build_tables(summary, runs, baseline)  # checks that the baseline is among the runs
    ttt = time_to_target_frame(runs, targets(summary, baseline, list(absolute_targets), list(baseline_fractions)))
    tables["time_to_target"] = time_to_target_table(ttt, baseline, experiments_in_order(summary))
    tables["claims"] = claims_table(summary, ttt, baseline)
    tables["halting"] = halting_table(summary, baseline)
    assert set(tables) == set(TABLES), "cgar.report.TABLES and the builders must agree"
    return {name: tables[name] for name in TABLES}
