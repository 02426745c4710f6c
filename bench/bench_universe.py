#!/usr/bin/env python
"""The shared 853-stock A-share universe: the point-in-time `top300` rule against its published lists, and the
bulk import of all its bars into SQLite and MariaDB.

    python bench/bench_universe.py [--universe ../shared/data/universe] [--limit N] [--reference-files 40]
                                   [--mysql mysql+pymysql://root@127.0.0.1:3306/test] [--reference-rev 5408705]

Rule: reads every vendor file's names and free-float market caps (2.45 M rows), applies
`quantnb.data.universe.top_n_members(status, 300)` at the 26 half-yearly rebalances 2009..2021 and compares
the result with `members_top300.csv`, membership by membership: rows, read time and rows/s, rule time,
memberships on both sides, the differences, and `exact` (true when none).

Import (`import`): `import_paths` of the vendor files (all of them, or the first `--limit`) into a new SQLite
file and into a new MariaDB database (`qnb_import_bench`, created on the server of `--mysql` and dropped
afterwards): seconds, `import_rows_per_s`, and the CPU time per row of the importing process, of its reading
workers and (when /proc shows it) of the MariaDB server. The reference is the importer as it was before the
fast path (`--reference-rev`, exported from git and run in a child process) on the first `--reference-files`
files, measured in the same run; `speedup_*` is the ratio of the two rates. The SQLite database imported
there is then ranked by the same rule from its stored bars and names (`stored_rule`: `exact` against the
published lists too).

Cache (`--url URL`, else the imported SQLite): `load_datasets` of every stock with feature_set 'all', each
in a fresh process with an empty cache directory of its own: `first_load_s` (computes and stores the panel),
`cached_load_s` (maps it), `cache_speedup`, `feature_rows_per_s` (rows / first_load_s), `memory_ratio`
(peak RSS growth during the first load / bytes of the final feature array), `cached_memory_ratio`,
`uncached_memory_ratio` (cache=False). `--synthetic` adds `synthetic_memory_ratio`: `build_datasets` on
5,000 synthetic stocks x 3,000 days. Prints one JSON object.
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, textwrap, time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from quantnb.data.importer import import_paths
from quantnb.data.db import normalize_symbol
from quantnb.data.universe import read_status, rebalance_dates, stored_status, top_n_members

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent/'shared'/'data'/'universe'
MYSQL = 'mysql+pymysql://root@127.0.0.1:3306/test'
REFERENCE_REV = '5408705'   # the last commit before the fast import: text checks, dict rows through SQLAlchemy
CHILD = textwrap.dedent('''
    import json, sys, time
    from quantnb.data.importer import import_paths
    files, url = json.loads(sys.argv[1]), sys.argv[2]
    start = time.perf_counter()
    results = import_paths(files, url)
    print(json.dumps(dict(rows=sum(r.rows for r in results), seconds=time.perf_counter() - start,
                          ok=all(r.ok for r in results))))
''')


def published_members(universe: Path) -> set:
    published = pd.read_csv(universe/'members_top300.csv', dtype={'code': str}, parse_dates=['effective_date'])
    return set(zip(published['effective_date'], published['code'].map(normalize_symbol)))


def stored_rule(url: str, universe: Path) -> dict:
    "The top300 rule over a database's own bars and name history, against the published lists."
    t = time.perf_counter()
    status = stored_status(url)
    read_s = time.perf_counter() - t
    dates = rebalance_dates(status['trade_date'].unique(), start='2009-01-01', end='2021-12-31')
    ours = top_n_members(status, 300, dates=dates)
    mine, theirs = set(zip(ours['effective_date'], ours['symbol'])), published_members(universe)
    return dict(read_s=round(read_s, 2), memberships=len(mine), only_ours=len(mine - theirs),
                only_published=len(theirs - mine), exact=mine == theirs)


def rule(universe: Path) -> dict:
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
    theirs = set(zip(published['effective_date'], published['code'].map(normalize_symbol)))
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

class MariaDB:
    "A scratch database on the server of `admin_url`, dropped on exit."
    def __init__(self, admin_url: str, name: str):
        self.admin, self.name = sa.create_engine(admin_url), name
        self.url = self.admin.url.set(database=name).render_as_string(hide_password=False)
    def __enter__(self):
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS `{self.name}`')
            conn.exec_driver_sql(f'CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4')
        return self.url
    def __exit__(self, *_):
        with self.admin.begin() as conn: conn.exec_driver_sql(f'DROP DATABASE IF EXISTS `{self.name}`')
        self.admin.dispose()


def server_cpu_s() -> float | None:
    "CPU seconds of the local MariaDB server so far, when /proc shows it (None elsewhere)."
    try:
        pid = subprocess.run(['pgrep', '-x', 'mariadbd'], capture_output=True, text=True).stdout.split()[0]
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (IndexError, OSError, ValueError): return None


def timed_import(files: list, url: str) -> dict:
    "Import `files` into `url` in this process: rate, and CPU per row of this process, its workers and the server."
    kids, server = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu_s()
    cpu, start = time.process_time(), time.perf_counter()
    results = import_paths(files, url, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after, server_after = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu_s()
    rows = sum(r.rows for r in results)
    workers = (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime)
    per_row = lambda s: round(s / rows * 1e6, 2)
    out = dict(files=len(files), rows=rows, ok=all(r.ok for r in results), seconds=round(seconds, 1),
               import_rows_per_s=round(rows / seconds),
               cpu_us_per_row=dict(writer=per_row(cpu), workers=per_row(workers)))
    if url.startswith('mysql') and server is not None: out['cpu_us_per_row']['server'] = per_row(server_after - server)
    return out


def reference_import(files: list, url: str, rev: str, tmp: Path) -> dict:
    "The importer of git revision `rev` on `files`, in a child process: its rate."
    package = tmp/f'ref-{rev}'
    if not package.exists():
        package.mkdir()
        archive = subprocess.run(['git', '-C', str(ROOT), 'archive', rev, 'quantnb'], capture_output=True, check=True)
        subprocess.run(['tar', '-x', '-C', str(package)], input=archive.stdout, check=True)
    env = {**os.environ, 'PYTHONPATH': str(package), 'QUANTNB_HOME': str(tmp/'home')}
    out = subprocess.run([sys.executable, '-c', CHILD, json.dumps([str(f) for f in files]), url], capture_output=True,
                         text=True, env=env, cwd=tmp)
    if out.returncode: raise SystemExit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(rows=result['rows'], ok=result['ok'], import_rows_per_s=round(result['rows'] / result['seconds']))


def imports(universe: Path, limit: int | None, reference_files: int, mysql: str, rev: str, sqlite: Path) -> dict:
    files = sorted(universe.glob('s[hz]*.csv.gz'))[:limit]
    subset = files[:reference_files]
    out = dict(load_before=os.getloadavg()[0])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out['sqlite'] = timed_import(files, f'sqlite:///{sqlite}')
        with MariaDB(mysql, 'qnb_import_bench') as url: out['mariadb'] = timed_import(files, url)
        reference = dict(rev=rev, files=len(subset))
        try:
            reference['sqlite'] = reference_import(subset, f'sqlite:///{tmp/"reference.sqlite"}', rev, tmp)
            with MariaDB(mysql, 'qnb_import_bench_ref') as url:
                reference['mariadb'] = reference_import(subset, url, rev, tmp)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:   # no git, or an unknown revision
            reference['error'] = str(e)
        out['reference'] = reference
    for backend in ('sqlite', 'mariadb'):
        if backend in out['reference']:
            out[f'speedup_{backend}'] = round(out[backend]['import_rows_per_s']
                                              / out['reference'][backend]['import_rows_per_s'], 1)
    out['load_after'] = os.getloadavg()[0]
    return out


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--universe', type=Path, default=DEFAULT)
    parser.add_argument('--limit', type=int, default=None, help='import only the first N files')
    parser.add_argument('--reference-files', type=int, default=40, help='files imported by the reference importer')
    parser.add_argument('--reference-rev', default=REFERENCE_REV)
    parser.add_argument('--mysql', default=MYSQL, help='a MariaDB/MySQL URL whose server gets the scratch databases')
    parser.add_argument('--url', help='a database holding the universe for the cache figures (default: the import\'s)')
    parser.add_argument('--synthetic', action='store_true', help='add the 5,000 x 3,000 synthetic memory ratio')
    parser.add_argument('--skip-rule', action='store_true', help='leave out the top300 rule over the vendor files')
    parser.add_argument('--skip-import', action='store_true', help='leave out the import (and the stored rule)')
    parser.add_argument('--skip-cache', action='store_true', help='leave out the feature-cache figures')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        raise SystemExit
    result = {} if args.skip_rule else rule(args.universe)
    keep = Path(tempfile.mkdtemp(prefix='bench-universe-'))   # the imported SQLite, kept for the cache figures
    try:
        if not args.skip_import:
            result['import'] = imports(args.universe, args.limit, args.reference_files, args.mysql,
                                       args.reference_rev, keep/'universe.sqlite')
            result['stored_rule'] = stored_rule(f'sqlite:///{keep/"universe.sqlite"}', args.universe)
        url = args.url or (None if args.skip_import else f'sqlite:///{keep/"universe.sqlite"}')
        if url and not args.skip_cache: result.update(cache_figures(url))
        if args.synthetic: result.update(synthetic_memory())
    finally: shutil.rmtree(keep, ignore_errors=True)
    print(json.dumps(result))
