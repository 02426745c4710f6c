"""The `quantnb` command, run as a user runs it: a subprocess with its own QUANTNB_HOME."""
import os, subprocess, sys, uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from quantnb.core import SAMPLE_DIR
from quantnb.data.db import StockDataLoader

QUANTNB = str(Path(sys.executable).parent / 'quantnb')   # the installed console script


def quantnb(*args, home, env=None, check=False):
    e = {**os.environ, 'QUANTNB_HOME': str(home), **(env or {})}
    e.pop('QUANTNB_DB_URL', None)
    r = subprocess.run([QUANTNB, *args], capture_output=True, text=True, env=e, timeout=120)
    if check: assert r.returncode == 0, r.stderr
    return r


def test_db_info_on_a_fresh_home_builds_the_embedded_sample(tmp_path):
    r = quantnb('db', 'info', home=tmp_path, check=True)
    assert 'symbols: 10  rows: 25722  dates: 2010-01-04 .. 2022-01-14' in r.stdout
    assert '贵州茅台' in r.stdout and (tmp_path / 'quantnb.sqlite').exists()


def test_concurrent_first_use_builds_one_whole_database(tmp_path):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: quantnb('db', 'info', home=tmp_path), range(3)))
    assert all(r.returncode == 0 and 'rows: 25722' in r.stdout for r in results), [r.stderr for r in results]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith('.lock')) == ['quantnb.sqlite']


def test_init_import_and_exit_codes(tmp_path):
    url = f'sqlite:///{tmp_path / "mine.sqlite"}'
    r = quantnb('db', 'init', '--url', url, home=tmp_path, check=True)
    assert 'tables ready' in r.stdout
    r = quantnb('db', 'info', '--url', url, home=tmp_path, check=True)
    assert 'no daily bars stored' in r.stdout
    bad = tmp_path / 'bad.csv'
    bad.write_text('symbol,trade_date,open,high,low,close,volume\n600000,2022-01-04,10,9,11,10,5\n')
    r = quantnb('db', 'import', str(bad), str(SAMPLE_DIR / 'sz300750.csv.gz'), '--url', url, home=tmp_path)
    assert r.returncode == 1
    assert "line 2, field 'high': high 9 is below low 11" in r.stdout
    assert '1 file(s) imported, 1 failed' in r.stdout
    assert StockDataLoader(url).list_symbols() == ['300750.SZ']
    r = quantnb('db', 'import', str(SAMPLE_DIR / 'sz300750.csv.gz'), '--url', url, home=tmp_path)
    assert r.returncode == 0 and '877 rows (0 new, 0 changed, 877 unchanged)' in r.stdout


def test_init_sample_into_a_named_database(tmp_path):
    url = f'sqlite:///{tmp_path / "s.sqlite"}'
    r = quantnb('db', 'init', '--sample', '--url', url, home=tmp_path, check=True)
    assert 'sample loaded: 25722 daily bars of 10 stocks' in r.stdout
    assert not (tmp_path / 'quantnb.sqlite').exists()   # the default database was never touched


def test_usage_errors_exit_2(tmp_path):
    assert quantnb('db', home=tmp_path).returncode == 2
    assert quantnb('db', 'import', home=tmp_path).returncode == 2
    assert quantnb('frobnicate', home=tmp_path).returncode == 2


def test_missing_tables_is_a_clear_error(tmp_path):
    import sqlite3
    sqlite3.connect(tmp_path / 'empty.sqlite').close()
    r = quantnb('db', 'info', '--url', f'sqlite:///{tmp_path / "empty.sqlite"}', home=tmp_path)
    assert r.returncode == 1 and 'quantnb db init' in r.stderr


HOSTS = ('%%', 'localhost')


@pytest.mark.mysql
def test_mysql_passwords_never_printed(mysql_server, make_mysql_db, tmp_path):
    "A password-protected MariaDB account: the password appears in no output, success or failure."
    db = make_mysql_db('qnb_cli')
    user, password = f'qnb_{uuid.uuid4().hex[:8]}', f'S3cret-{uuid.uuid4().hex[:6]}'
    with mysql_server.begin() as conn:
        for host in HOSTS:   # '%%' is '%' once pymysql has applied its paramstyle
            conn.exec_driver_sql(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
            conn.exec_driver_sql(f"GRANT ALL ON `{db.rsplit('/', 1)[1]}`.* TO '{user}'@'{host}'")
    try:
        url = db.replace('root@', f'{user}:{password}@')
        outputs = [quantnb('db', 'init', '--sample', '--url', url, home=tmp_path, check=True),
                   quantnb('db', 'info', '--url', url, home=tmp_path, check=True),
                   quantnb('db', 'import', str(SAMPLE_DIR / 'sz300750.csv.gz'), '--url', url, home=tmp_path,
                           check=True),
                   quantnb('db', 'info', '--url', url.replace(password, password + 'x'), home=tmp_path)]
        assert 'rows: 25722' in outputs[1].stdout and f'{user}:***@' in outputs[1].stdout
        assert outputs[-1].returncode != 0
        for r in outputs: assert password not in r.stdout + r.stderr
    finally:
        with mysql_server.begin() as conn:
            for host in HOSTS: conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'{host}'")
