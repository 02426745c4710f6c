#!/usr/bin/env python
"""The point-in-time `top300` rule on the shared 853-stock A-share universe, against its published lists.

    python bench/bench_universe.py [--universe ../shared/data/universe]

Reads every vendor file's names and free-float market caps (2.45 M rows), applies
`quantnb.data.universe.top_n_members(status, 300)` at the 26 half-yearly rebalances 2009..2021 and compares
the result with `members_top300.csv`, membership by membership. Prints one JSON object: rows, read time and
rows/s, rule time, memberships on both sides, the differences, and `exact` (true when none).
"""
import argparse, json, time
from pathlib import Path

import pandas as pd

from quantnb.data.universe import read_status, rebalance_dates, top_n_members

DEFAULT = Path(__file__).resolve().parents[2]/'shared'/'data'/'universe'


def main(universe: Path) -> dict:
    files = sorted(universe.glob('s[hz]*.csv.gz'))
    if not files: raise SystemExit(f'{universe}: no vendor files (sh*.csv.gz, sz*.csv.gz) here')
    t = time.perf_counter()
    status = read_status(files)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    dates = rebalance_dates(status['trade_date'].unique(), start='2009-01-01', end='2021-12-31')   # as published
    ours = top_n_members(status, 300, dates=dates)
    rule_s = time.perf_counter() - t
    published = pd.read_csv(universe/'members_top300.csv', dtype={'code': str}, parse_dates=['effective_date'])
    mine = set(zip(ours['effective_date'], ours['symbol']))
    theirs = set(zip(published['effective_date'], published['code'].str[2:]))
    return dict(files=len(files), rows=len(status), read_s=round(read_s, 2),
                read_rows_per_s=round(len(status) / read_s),
                rule_s=round(rule_s, 3), rebalances=int(ours['effective_date'].nunique()), memberships=len(mine),
                published=len(theirs), only_ours=len(mine - theirs), only_published=len(theirs - mine),
                exact=mine == theirs)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--universe', type=Path, default=DEFAULT)
    print(json.dumps(main(parser.parse_args().universe)))
