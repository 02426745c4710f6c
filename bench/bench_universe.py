#!/usr/bin/env python
"""The point-in-time `top300` rule on the shared 853-stock A-share universe, against its published lists.

    python bench/bench_universe.py [--universe ../shared/data/universe]

Reads every vendor file's names and free-float market caps (2.45 M rows), applies
`quantnb.data.universe.top_n_members(status, 300)` at the 26 half-yearly rebalances 2009..2021 and compares
the result with `members_top300.csv`, membership by membership. Prints one JSON object: rows, read time and
rows/s, rule time, memberships on both sides, the differences, and `exact` (true when none).

    python bench/bench_universe.py --url sqlite:////tmp/universe.db [--synthetic] [--skip-rule]

With `--url` (a database holding the universe, e.g. from `quantnb db import --url URL PATH/s[hz]*.csv.gz`),
also `load_datasets` of every stock with feature_set 'all', each in a fresh process with an empty cache
directory of its own: `first_load_s` (computes and stores the panel), `cached_load_s` (maps it),
`cache_speedup`, `feature_rows_per_s` (rows / first_load_s), `memory_ratio` (peak RSS growth during the
first load / bytes of the final feature array), `cached_memory_ratio`, `uncached_memory_ratio` (cache=False).
`--synthetic` adds `synthetic_memory_ratio`: `build_datasets` on 5,000 synthetic stocks x 3,000 days.
"""
import argparse, json, shutil, subprocess, sys, tempfile, time
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


def _rss_bytes(field: str) -> int:
    "VmRSS or VmHWM of this process, in bytes (Linux)."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'): return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')

def _measured(build) -> dict:
    "Run `build()` (returns a DatasetBundle) after resetting the peak RSS; seconds, sizes and the memory ratio."
    import gc
    gc.collect()
    Path('/proc/self/clear_refs').write_text('5')   # the peak RSS (VmHWM) starts again from the current RSS
    base = _rss_bytes('VmRSS')
    t = time.perf_counter()
    bundle = build()
    seconds = time.perf_counter() - t
    growth = _rss_bytes('VmHWM') - base
    values = bundle.train.values
    array_bytes = values.numel() * values.element_size()
    return dict(seconds=round(seconds, 2), rows=int(values.shape[0]), n_features=int(values.shape[1]),
                array_bytes=array_bytes, peak_growth_bytes=growth, memory_ratio=round(growth / array_bytes, 3))

def _child(task: dict) -> dict:
    "One measurement in this (fresh) process."
    if task['kind'] == 'universe':
        from quantnb.data.datasets import load_datasets
        from quantnb.data.db import StockDataLoader
        symbols = StockDataLoader(task['url']).list_symbols()
        cache = task['cache'] if task['cache'] else False
        return _measured(lambda: load_datasets(symbols, url=task['url'], feature_set='all', seq_len=60, cache=cache))
    from _synthetic import as_panel, synthetic_universe
    from quantnb.data.datasets import build_datasets
    bars = as_panel(synthetic_universe(task['n_symbols'], task['n_days']))
    return _measured(lambda: build_datasets(bars, 'all', seq_len=60))

def _in_child(task: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, '--child', json.dumps(task)], capture_output=True, text=True)
    if out.returncode: raise SystemExit(f'measurement {task} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])

def cache_figures(url: str) -> dict:
    "First (computing) and cached `load_datasets` of every stock in `url`, each in a fresh process; memory ratios."
    cache = tempfile.mkdtemp(prefix='bench-cache-')
    try:
        first = _in_child(dict(kind='universe', url=url, cache=cache))
        cached = _in_child(dict(kind='universe', url=url, cache=cache))
        uncached = _in_child(dict(kind='universe', url=url, cache=None))
    finally: shutil.rmtree(cache, ignore_errors=True)
    return dict(load_rows=first['rows'], n_features=first['n_features'],
                feature_array_gb=round(first['array_bytes'] / 1e9, 3),
                first_load_s=first['seconds'], cached_load_s=cached['seconds'],
                cache_speedup=round(first['seconds'] / cached['seconds'], 1),
                feature_rows_per_s=round(first['rows'] / first['seconds']),
                memory_ratio=first['memory_ratio'], cached_memory_ratio=cached['memory_ratio'],
                uncached_load_s=uncached['seconds'], uncached_memory_ratio=uncached['memory_ratio'])

def synthetic_memory(n_symbols: int = 5000, n_days: int = 3000) -> dict:
    "Peak memory of `build_datasets` ('all' features) on a synthetic panel, over its final feature array."
    r = _in_child(dict(kind='synthetic', n_symbols=n_symbols, n_days=n_days))
    return dict(synthetic_stocks=n_symbols, synthetic_days=n_days, synthetic_rows=r['rows'],
                synthetic_array_gb=round(r['array_bytes'] / 1e9, 3), synthetic_build_s=r['seconds'],
                synthetic_memory_ratio=r['memory_ratio'])


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--universe', type=Path, default=DEFAULT)
    parser.add_argument('--url', help='database holding the universe: adds the feature-cache figures')
    parser.add_argument('--synthetic', action='store_true', help='add the 5,000 x 3,000 synthetic memory ratio')
    parser.add_argument('--skip-rule', action='store_true', help='leave out the top300 rule comparison')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        raise SystemExit
    result = {} if args.skip_rule else main(args.universe)
    if args.url: result.update(cache_figures(args.url))
    if args.synthetic: result.update(synthetic_memory())
    print(json.dumps(result))
