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
files, measured in the same run; `speedup_*` is the ratio of the two rates. Prints one JSON object.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, textwrap, time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from quantnb.data.importer import import_paths
from quantnb.data.universe import read_status, rebalance_dates, top_n_members

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
    theirs = set(zip(published['effective_date'], published['code'].str[2:]))
    return dict(files=len(files), rows=len(status), read_s=round(read_s, 2),
                read_rows_per_s=round(len(status) / read_s),
                rule_s=round(rule_s, 3), rebalances=int(ours['effective_date'].nunique()), memberships=len(mine),
                published=len(theirs), only_ours=len(mine - theirs), only_published=len(theirs - mine),
                exact=mine == theirs)


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


def imports(universe: Path, limit: int | None, reference_files: int, mysql: str, rev: str) -> dict:
    files = sorted(universe.glob('s[hz]*.csv.gz'))[:limit]
    subset = files[:reference_files]
    out = dict(load_before=os.getloadavg()[0])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out['sqlite'] = timed_import(files, f'sqlite:///{tmp/"bench.sqlite"}')
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
    args = parser.parse_args()
    result = rule(args.universe)
    result['import'] = imports(args.universe, args.limit, args.reference_files, args.mysql, args.reference_rev)
    print(json.dumps(result))
