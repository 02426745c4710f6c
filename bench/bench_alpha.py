#!/usr/bin/env python
"""Alpha158 / Alpha360 throughput over a whole universe, against a naive per-stock pandas computation.

    python bench/bench_alpha.py [--universe /work/shared/data/universe] [--stocks 0] [--naive-stocks 6]
    python bench/bench_alpha.py --synthetic [--symbols 800] [--days 3000]

Reads the vendor gzip files directly (columns per the universe's SOURCE.md), forward-adjusts the prices
(`adjustment_factors`, as `StockDataLoader` does), and times `alpha158` and `alpha360` over all stocks (`--stocks N`:
the first N files). The reference is tests/alpha_oracle.py — Qlib's expressions with pandas rolling windows, one stock
at a time — timed on `--naive-stocks` stocks spread over the universe, with the fast path timed on the same stocks in
the same run; `ratio_vs_naive` compares their rows/s, `max_diff_vs_naive` (absolute below 1, relative
above) and `same_nan_as_naive` check they agree. Prints JSON.
Timings are wall-clock and process CPU time (the machine may be shared).

`numpy_hugepages` says whether NumPy advises transparent huge pages for its large arrays (its default; set
NUMPY_MADVISE_HUGEPAGE=0 to stop it). The Alpha outputs themselves are kept off huge pages either way
(`quantnb.data.alpha.output_array`).
"""
import argparse, gc, json, os, sys, time
from pathlib import Path

import numpy as np, pandas as pd

from quantnb.data.alpha import ALPHA158_NAMES, alpha158, alpha360
from quantnb.data.db import adjust_prices, adjustment_factors
from quantnb.data.importer import VENDOR_KLINE_COLUMNS

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
import alpha_oracle                                          # noqa: E402
from _synthetic import as_panel, synthetic_universe          # noqa: E402


def read_universe(path: str, stocks: int = 0) -> pd.DataFrame:
    "Vendor gzip files -> bars indexed (symbol, trade_date), qfq-adjusted with `adj_factor`, like `load_many`."
    files = sorted(Path(path).glob('s[hz]*.csv.gz'))
    if stocks: files = files[:stocks]
    if not files: raise SystemExit(f'no vendor files (s[hz]*.csv.gz) in {path}')
    frames = [pd.read_csv(p, skiprows=1, usecols=list(VENDOR_KLINE_COLUMNS), dtype={'股票代码': str}) for p in files]
    df = pd.concat(frames, ignore_index=True).rename(columns=VENDOR_KLINE_COLUMNS).drop(columns='name')
    df['trade_date'] = pd.to_datetime(df['trade_date'])
    df = df.sort_values(['symbol', 'trade_date'], ignore_index=True)
    df = adjust_prices(df, adjustment_factors(df['symbol'], df['close'], df['pre_close']))
    return df.set_index(['symbol', 'trade_date'])


def synthetic(symbols: int, days: int) -> pd.DataFrame:
    bars = as_panel(synthetic_universe(symbols, days))
    return bars.assign(adj_factor=1.0)


def timed(fn, *args):
    "Result, wall seconds, CPU seconds."
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def naive158(bars: pd.DataFrame) -> pd.DataFrame:
    "The reference: each stock on its own, Qlib's expressions as pandas rolling windows."
    return pd.concat({s: alpha_oracle.alpha158(g.droplevel(0)) for s, g in bars.groupby(level=0, sort=False)},
                     names=bars.index.names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--universe', default='/work/shared/data/universe')
    ap.add_argument('--stocks', type=int, default=0, help='first N files of the universe (0: all)')
    ap.add_argument('--naive-stocks', type=int, default=6, help='stocks the naive reference is timed on')
    ap.add_argument('--synthetic', action='store_true', help='a synthetic panel instead of the universe files')
    ap.add_argument('--symbols', type=int, default=800)
    ap.add_argument('--days', type=int, default=3000)
    ap.add_argument('--skip-360', action='store_true', help='time Alpha158 only (Alpha360 holds 2.3x the memory)')
    args = ap.parse_args()

    t = time.perf_counter()
    bars = synthetic(args.symbols, args.days) if args.synthetic else read_universe(args.universe, args.stocks)
    read_seconds = time.perf_counter() - t
    rows, symbols = len(bars), bars.index.get_level_values(0).unique()
    result = {'data': 'synthetic' if args.synthetic else args.universe, 'stocks': len(symbols), 'rows': rows,
              'read_seconds': round(read_seconds, 2),
              'numpy_hugepages': os.environ.get('NUMPY_MADVISE_HUGEPAGE', '1') != '0'}

    alpha158(bars.loc[symbols[:2]])                                   # warm-up: imports, first allocations
    out, wall, cpu = timed(alpha158, bars)
    assert out.shape == (rows, 158)
    result['alpha158'] = {'seconds': round(wall, 2), 'cpu_seconds': round(cpu, 2),
                          'rows_per_s': round(rows / wall), 'rows_per_s_cpu': round(rows / cpu)}
    del out
    if not args.skip_360:
        out, wall, cpu = timed(alpha360, bars)
        assert out.shape == (rows, 360)
        result['alpha360'] = {'seconds': round(wall, 2), 'cpu_seconds': round(cpu, 2),
                              'rows_per_s': round(rows / wall), 'rows_per_s_cpu': round(rows / cpu)}
        del out

    pick = symbols[np.linspace(0, len(symbols) - 1, min(args.naive_stocks, len(symbols))).astype(int)]
    sample = bars.loc[pick]
    naive, naive_wall, naive_cpu = timed(naive158, sample)
    fast, fast_wall, fast_cpu = timed(alpha158, sample)
    got, want = fast[ALPHA158_NAMES].to_numpy(np.float64), naive.loc[sample.index, ALPHA158_NAMES].to_numpy()
    want = np.where(np.isfinite(want), want, np.nan)                 # the fast path writes NaN for +-inf
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))       # absolute below 1, relative above
    result['naive_reference'] = {
        'stocks': len(pick), 'rows': len(sample),
        'naive_seconds': round(naive_wall, 2), 'naive_rows_per_s': round(len(sample) / naive_wall),
        'fast_seconds': round(fast_wall, 3), 'fast_rows_per_s': round(len(sample) / fast_wall),
        'ratio_vs_naive': round(naive_wall / fast_wall, 1), 'ratio_vs_naive_cpu': round(naive_cpu / fast_cpu, 1),
        'max_diff_vs_naive': float(np.nanmax(err)), 'same_nan_as_naive': bool((np.isnan(got) == np.isnan(want)).all())}
    result['ratio_vs_naive_full_universe'] = round(result['alpha158']['rows_per_s']
                                                   / result['naive_reference']['naive_rows_per_s'], 1)
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
