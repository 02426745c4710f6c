#!/usr/bin/env python
"""Loader throughput and overhead against plain `pandas.read_sql` of the same query, same process.

    python bench/bench_db.py [--mysql-url mysql+pymysql://root@127.0.0.1:3306/test] [--repeat 5]

Datasets: the bundled sample (10 stocks) and a synthetic universe of 300 symbols x 2,500 days that is
imported first (through the importer, so its import rate is reported too). Backends: SQLite and
MariaDB (a scratch database, dropped afterwards). Prints one JSON object; `loader_overhead` per
backend is (loader time / read_sql time - 1) with the default `adjust='qfq'`, the worse of the two datasets.
"""
import argparse, json, statistics, sys, tempfile, time, uuid
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from quantnb.data.db import StockDataLoader, _kline_query, get_engine, init_db
from quantnb.data.importer import import_paths, load_sample

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic import synthetic_universe


def measure(url, symbols, repeat):
    "Median seconds of read_sql and of the loader (qfq and raw), runs interleaved after one warm-up each."
    loader = StockDataLoader(url)
    engine = get_engine(url)
    query = _kline_query(symbols, None, None)
    def read_sql():
        with engine.connect() as conn: return len(pd.read_sql(query, conn))
    runs = {'read_sql': read_sql,
            'loader_qfq': lambda: len(loader.load_many(symbols, adjust='qfq')),
            'loader_raw': lambda: len(loader.load_many(symbols, adjust=None))}
    rows = {name: fn() for name, fn in runs.items()}           # warm-up: connections, caches, table check
    assert len(set(rows.values())) == 1, rows
    times = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            t = time.perf_counter(); fn(); times[name].append(time.perf_counter() - t)
    sec = {name: statistics.median(ts) for name, ts in times.items()}
    n = rows['read_sql']
    return {'rows': n, **{f'{k}_seconds': round(v, 4) for k, v in sec.items()},
            'read_sql_rows_per_s': round(n / sec['read_sql']), 'loader_rows_per_s': round(n / sec['loader_qfq']),
            'loader_overhead': round(sec['loader_qfq'] / sec['read_sql'] - 1, 4),
            'loader_overhead_raw': round(sec['loader_raw'] / sec['read_sql'] - 1, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--mysql-url', default='mysql+pymysql://root@127.0.0.1:3306/test')
    ap.add_argument('--repeat', type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    universe = synthetic_universe(300, 2500).drop(columns=['float_market_cap', 'total_market_cap'])
    csv = tmp / 'universe.csv'
    universe.to_csv(csv, index=False)
    admin = sa.create_engine(args.mysql_url)
    scratch = f'qnb_bench_{uuid.uuid4().hex[:8]}'
    with admin.begin() as c: c.exec_driver_sql(f'CREATE DATABASE `{scratch}` CHARACTER SET utf8mb4')
    urls = {'sqlite': f'sqlite:///{tmp / "bench.sqlite"}',
            'mariadb': admin.url.set(database=scratch).render_as_string(hide_password=False)}
    result = {'synthetic': {'symbols': 300, 'days': 2500, 'rows': len(universe)}}
    try:
        for backend, url in urls.items():
            init_db(url)
            t = time.perf_counter(); load_sample(url); sample_import = time.perf_counter() - t
            t = time.perf_counter(); (r,) = import_paths([csv], url); universe_import = time.perf_counter() - t
            assert r.ok, r.error
            sample_symbols = [f'{s}' for s in StockDataLoader(url).list_symbols() if not s.startswith('99')]
            universe_symbols = sorted(universe.symbol.unique())
            result[backend] = {
                'import_rows_per_s': round(len(universe) / universe_import),
                'sample_import_seconds': round(sample_import, 3),
                'sample': measure(url, sample_symbols, args.repeat),
                'universe': measure(url, universe_symbols, args.repeat),
            }
            result[backend]['loader_overhead'] = max(result[backend]['sample']['loader_overhead'],
                                                     result[backend]['universe']['loader_overhead'])
            print(f'{backend} done', file=sys.stderr)
    finally:
        with admin.begin() as c: c.exec_driver_sql(f'DROP DATABASE IF EXISTS `{scratch}`')
    result['loader_overhead'] = {b: result[b]['loader_overhead'] for b in urls}
    result['target'] = 'loader_overhead < 0.15 on every backend'
    result['ok'] = all(v < 0.15 for v in result['loader_overhead'].values())
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
