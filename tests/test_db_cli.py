"""`quantnb db ...` as a user runs it (a subprocess), on SQLite and MariaDB: URLs and passwords, changed bars,
names, suspicious bars, SQLite under concurrency."""
import os, sqlite3, subprocess, sys, time, uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from quantnb.core import SAMPLE_DIR, mask_url, parse_db_url

QUANTNB = str(Path(sys.executable).parent / 'quantnb')
PLAIN_HEADER = 'symbol,trade_date,open,high,low,close,volume,amount,pre_close'
ROWS = ['600000,2022-01-04,10.0,10.5,9.8,10.2,1000,10200,10.0',
        '600000,2022-01-05,10.2,10.6,10.1,10.4,1200,12480,10.2',
        '600000,2022-01-06,10.4,10.7,10.3,10.5,900,9450,10.4']


def quantnb(*args, home, env=None, timeout=120):
    e = {**os.environ, 'QUANTNB_HOME': str(home), **(env or {})}
    e.pop('QUANTNB_DB_URL', None)
    return subprocess.run([QUANTNB, *args], capture_output=True, text=True, env=e, timeout=timeout)


def write(path: Path, lines):
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path


# --- URLs: a missing driver is one line that says what to write; every password form is masked ------------

def test_mysql_without_pymysql_says_what_to_write(tmp_path):
    r = quantnb('db', 'info', '--url', 'mysql://root@127.0.0.1/test', home=tmp_path)
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr.strip().count('\n') == 0 and 'Traceback' not in r.stderr
    assert 'write mysql+pymysql://root@127.0.0.1/test' in r.stderr


def test_an_unknown_driver_and_an_unparsable_url_are_one_line_without_the_url(tmp_path):
    r = quantnb('db', 'info', '--url', 'mysql+mysqlconnector://u:hunter2@127.0.0.1/test', home=tmp_path)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'hunter2' not in r.stderr and 'mysql+pymysql' in r.stderr
    r = quantnb('db', 'info', '--url', 'mysql+pymysql://u:hunter2@127.0.0.1:port/test', home=tmp_path)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'hunter2' not in r.stderr
    assert 'cannot be parsed' in r.stderr


@pytest.mark.parametrize('text, expected', [
    ('mysql+pymysql://u@host:3306/db?password=SECRET', 'mysql+pymysql://u@host:3306/db?password=***'),
    ('mysql+pymysql://u@host/db?charset=utf8mb4&passwd=SECRET&x=1',
     'mysql+pymysql://u@host/db?charset=utf8mb4&passwd=***&x=1'),
    ('mysql+pymysql://u@host/db?PWD=SECRET', 'mysql+pymysql://u@host/db?PWD=***'),
    ('mysql+pymysql://u:SE CRET@host/db', 'mysql+pymysql://u:***@host/db'),
    ('mysql+pymysql://u@host/db?password=SE CRET', 'mysql+pymysql://u@host/db?password=***'),
    ('failed: mysql+pymysql://u:SE CRET@host/db (timeout)', 'failed: mysql+pymysql://u:***@host/db (timeout)'),
    ('mysql+pymysql://u:SE@CRET@host/db', 'mysql+pymysql://u:***@host/db'),
    ("{'db_url': 'mysql+pymysql://u@h/db?password=SECRET'}", "{'db_url': 'mysql+pymysql://u@h/db?password=***'}"),
    ('"db_url": "mysql+pymysql://u:SECRET@h/db"', '"db_url": "mysql+pymysql://u:***@h/db"'),
])
def test_every_password_form_is_masked(text, expected):
    assert mask_url(text) == expected
    assert 'CRET' not in mask_url(text)


def test_an_unparsable_url_is_refused_without_repeating_it():
    with pytest.raises(ValueError) as err: parse_db_url('mysql+pymysql://u:hunter2@h:port/db')
    assert 'hunter2' not in str(err.value)


@pytest.fixture(scope='module')
def mysql_user_db(make_mysql_db, mysql_server):
    "A scratch MariaDB database and a user whose password has a space, for the URL forms below."
    url = make_mysql_db('qnb_pw')
    name, user, password = url.rsplit('/', 1)[1], f'qnb_{uuid.uuid4().hex[:8]}', 'Se cret9'
    with mysql_server.begin() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        conn.execute(sa.text(f"GRANT ALL ON `{name}`.* TO '{user}'@'%'"))
    parsed = parse_db_url(url)
    host = f'{parsed.host}:{parsed.port or 3306}'
    yield host, name, user, password
    with mysql_server.begin() as conn: conn.execute(sa.text(f"DROP USER '{user}'@'%'"))


@pytest.mark.parametrize('form', ['encoded', 'raw space', 'query password', 'query passwd'])
def test_no_password_form_reaches_the_output_of_any_db_command(mysql_user_db, tmp_path, form):
    host, name, user, password = mysql_user_db
    url = {'encoded': f'mysql+pymysql://{user}:Se%20cret9@{host}/{name}',
           'raw space': f'mysql+pymysql://{user}:{password}@{host}/{name}',
           'query password': f'mysql+pymysql://{user}@{host}/{name}?password=Se%20cret9',
           'query passwd': f'mysql+pymysql://{user}@{host}/{name}?charset=utf8mb4&passwd=Se%20cret9'}[form]
    outputs = [quantnb('db', 'init', '--url', url, home=tmp_path),
               quantnb('db', 'import', '--url', url, str(SAMPLE_DIR / 'sz300750.csv.gz'), home=tmp_path),
               quantnb('db', 'info', '--url', url, home=tmp_path),
               quantnb('db', 'check', '--url', url, home=tmp_path)]
    for r in outputs:
        assert r.returncode in (0, 1) and 'Traceback' not in r.stderr, r.stderr
        assert 'cret9' not in r.stdout + r.stderr and 'Se%20' not in r.stdout + r.stderr
    assert outputs[0].returncode == 0 and '***' in outputs[0].stdout
    assert 'rows: 877' in outputs[2].stdout


# --- data: changed bars, names, suspicious bars (both backends) -----------------------------------------

def test_db_import_refuses_changed_bars_and_replace_lists_them(empty_db_url, tmp_path):
    first = write(tmp_path / 'first.csv', [PLAIN_HEADER, *ROWS])
    later = write(tmp_path / 'later.csv', [PLAIN_HEADER, ROWS[1], ROWS[2].replace(',900,', ',950,'),
                                          '600000,2022-01-07,10.5,10.8,10.4,10.6,1000,10600,10.5'])
    r = quantnb('db', 'import', '--url', empty_db_url, str(first), home=tmp_path)
    assert r.returncode == 0 and '(3 new, 0 changed, 0 unchanged)' in r.stdout
    r = quantnb('db', 'import', '--url', empty_db_url, str(later), home=tmp_path)
    assert r.returncode == 1 and str(later) in r.stdout and "line 3, field 'volume'" in r.stdout
    assert 'volume stored 900, new 950' in r.stdout and '--replace' in r.stdout
    r = quantnb('db', 'import', '--url', empty_db_url, '--replace', str(later), home=tmp_path)
    assert r.returncode == 0 and '(1 new, 1 replaced, 1 unchanged)' in r.stdout
    assert 'replaced 600000.SH 2022-01-06 (line 3): volume 900 -> 950' in r.stdout


def test_db_info_shows_a_dash_for_a_code_without_a_name(empty_db_url, tmp_path):
    quantnb('db', 'import', '--url', empty_db_url, str(write(tmp_path / 'a.csv', [PLAIN_HEADER, *ROWS])), home=tmp_path)
    r = quantnb('db', 'info', '--url', empty_db_url, home=tmp_path)
    line = next(l for l in r.stdout.splitlines() if l.startswith('600000.SH'))
    assert r.returncode == 0 and 'NaN' not in r.stdout and 'None' not in line and line.split()[1] == '-'


def test_db_check_lists_jumps_zero_volume_and_short_histories(empty_db_url, tmp_path):
    rows = ['600000,2022-01-04,100,105,98,102,1000,102000,',
            '600000,2022-01-05,10.2,10.6,10.1,10.4,12000,124800,',     # an unadjusted 10-for-1 split
            '600000,2022-01-06,10.4,10.4,10.4,10.4,0,0,']               # a suspended day written as a bar
    r = quantnb('db', 'import', '--url', empty_db_url, str(write(tmp_path / 's.csv', [PLAIN_HEADER, *rows])),
                home=tmp_path)
    assert r.returncode == 0 and 'warning: 600000.SH 2022-01-05: close 10.4 is -90%' in r.stdout
    r = quantnb('db', 'check', '--url', empty_db_url, home=tmp_path)
    assert r.returncode == 1 and '3 suspicious' in r.stdout
    for expected in ['2022-01-05        jump', '2022-01-06 zero_volume', 'few_rows', 'only 3 bars']:
        assert expected in r.stdout, r.stdout
    r = quantnb('db', 'check', '--url', empty_db_url, '--symbols', '000001.SZ', home=tmp_path)
    assert r.returncode == 0 and 'no suspicious bars' in r.stdout


def test_db_check_on_the_sample_finds_nothing(tmp_path):
    r = quantnb('db', 'check', home=tmp_path)
    assert r.returncode == 0 and 'no suspicious bars' in r.stdout


# --- SQLite: readers never wait on a writer, writers queue, a lock that outlasts the timeout is one line ------

@pytest.fixture
def sqlite_db(tmp_path):
    path = tmp_path / 'busy.sqlite'
    url = f'sqlite:///{path}'
    r = quantnb('db', 'import', '--url', url, str(SAMPLE_DIR / 'sz300750.csv.gz'), home=tmp_path)
    assert r.returncode == 0, r.stderr
    return path, url


def _hold_write_lock(path):
    """Another process's writer in the middle of a transaction (EXCLUSIVE: in rollback-journal mode it shuts readers
    out)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    conn.execute('BEGIN EXCLUSIVE')
    conn.execute("UPDATE stock_kline_data SET volume = volume + 1 WHERE symbol = '300750.SZ'")
    return conn


def test_sqlite_is_in_wal_mode_and_readers_do_not_wait_for_a_writer(sqlite_db, tmp_path):
    path, url = sqlite_db
    assert sqlite3.connect(path).execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    writer = _hold_write_lock(path)
    try:
        start = time.monotonic()
        r = quantnb('db', 'info', '--url', url, home=tmp_path, env={'QUANTNB_SQLITE_TIMEOUT': '30'})
        assert r.returncode == 0 and 'rows: 877' in r.stdout, r.stderr
        assert time.monotonic() - start < 25
    finally: writer.rollback(); writer.close()


def test_a_second_writer_waits_its_turn(sqlite_db, tmp_path):
    path, url = sqlite_db
    writer = _hold_write_lock(path)
    e = {**os.environ, 'QUANTNB_HOME': str(tmp_path), 'QUANTNB_SQLITE_TIMEOUT': '60'}
    proc = subprocess.Popen([QUANTNB, 'db', 'import', '--url', url, str(SAMPLE_DIR / 'sh600519.csv.gz')],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    time.sleep(2)
    writer.rollback(); writer.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and 'sh600519.csv.gz: kline, 2920 rows (2920 new' in out, out + err


def test_a_lock_that_outlasts_the_timeout_is_one_clear_line(sqlite_db, tmp_path):
    path, url = sqlite_db
    writer = _hold_write_lock(path)
    try:
        r = quantnb('db', 'import', '--url', url, str(SAMPLE_DIR / 'sh600519.csv.gz'), home=tmp_path,
                    env={'QUANTNB_SQLITE_TIMEOUT': '1'})
    finally: writer.rollback(); writer.close()
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    failed = next(l for l in r.stdout.splitlines() if l.startswith('FAILED'))
    assert 'is locked' in failed and 'another process' in failed and 'QUANTNB_SQLITE_TIMEOUT' in failed
    assert 'INSERT' not in r.stdout and 'SQL:' not in r.stdout and 'sqlalche.me' not in r.stdout


def test_the_embedded_database_is_built_once_and_leaves_no_lock_file(tmp_path):
    "A new user's first command builds the sample database; the lock that guarded it is not left behind."
    r = quantnb('db', 'info', home=tmp_path)
    assert r.returncode == 0 and 'symbols: 10' in r.stdout, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(('-wal', '-shm'))) == ['quantnb.sqlite']
