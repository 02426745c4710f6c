"""The fast import: the quick reader and the checking reader agree, workers and bulk writes change nothing that is
stored, the jump check of new bars matches the full one, `data_version` and the fingerprint follow every change, and
the progress line goes to stderr only when asked."""
import os, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from quantnb.core import SAMPLE_DIR
from quantnb.data import importer
from quantnb.data.db import StockDataLoader, data_version, fingerprint_digest, get_engine, init_db, suspicious_bars
from quantnb.data.importer import import_file, import_paths, read_kline_csv, sniff_format
from conftest import table_dump

SLICE = sorted((SAMPLE_DIR / 'universe').glob('s[hz]*.csv.gz'))   # 40 real stocks, 2019..2021
PLAIN_HEADER = 'symbol,trade_date,open,high,low,close,volume,amount,pre_close'
QUANTNB = str(Path(sys.executable).parent / 'quantnb')


def write(path: Path, lines):
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path


def second_url(request, tmp_path):
    "Another empty database on the same backend as `request`'s `empty_db_url`."
    if request.node.callspec.params['empty_db_url'] == 'sqlite': url = f'sqlite:///{tmp_path / "second.sqlite"}'
    else: url = request.getfixturevalue('make_mysql_db')('qnb_import_fast')
    init_db(url)
    return url


def versions(url):
    "`data_version` without its timestamps."
    v = data_version
    with get_engine(url).connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(sa.select(v.c.symbol, v.c.version, v.c.rows, v.c.first_date,
                                                                    v.c.last_date))}


# --- the quick reader gives exactly what the checking reader gives, or leaves the file to it --------------------

def test_the_quick_reader_reads_every_bundled_file_as_the_checking_reader_does():
    for path in importer.sample_files()[1:] + SLICE[::4]:
        fmt = sniff_format(path)
        quick = [df for df, _ in importer._quick_chunks(path, fmt, chunk_rows=300)]   # raises if it gave up
        checked = [df for df, problems in importer._validated_chunks(path, fmt, chunk_rows=300) if not problems]
        assert len(quick) == len(checked) >= 1
        for a, b in zip(quick, checked): pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize('odd', ['slashed dates', 'a blank line', 'a trailing space', 'an empty amount'])
def test_odd_but_valid_files_are_imported_as_their_plain_twin(empty_db_url, tmp_path, odd):
    "Two of them stop the quick reader; the checking reader then imports them."
    days = pd.bdate_range('2021-01-04', periods=600)
    rows = [f'600000,{d:%Y-%m-%d},10,11,9,10.5,{1000 + i},{10500 + i},10' for i, d in enumerate(days)]
    clean = write(tmp_path / 'clean.csv', [PLAIN_HEADER, *rows])
    if odd == 'slashed dates': rows = [r.replace('-', '/') for r in rows]
    if odd == 'a blank line': rows.insert(300, '')
    if odd == 'a trailing space': rows[5] = rows[5].replace(',10,11,', ' ,10,11,')   # after the date
    if odd == 'an empty amount': rows[7] = rows[7].replace(',10507,', ',,')
    path = write(tmp_path / 'odd.csv', [PLAIN_HEADER, *rows])
    if odd in ('a blank line', 'a trailing space'):
        with pytest.raises(importer._NotClean): list(importer._quick_chunks(path, sniff_format(path)))
    result = import_file(path, empty_db_url)
    assert result.ok and result.rows == result.new_rows == 600
    expected = read_kline_csv(clean)
    if odd == 'an empty amount': expected.loc[7, 'amount'] = np.nan
    stored = StockDataLoader(empty_db_url).load_kline_data('600000', adjust=None)
    pd.testing.assert_frame_equal(stored.reset_index()[expected.columns.drop('symbol')],
                                  expected.drop(columns='symbol'), check_exact=True)


# --- workers and bulk writes (LOAD DATA on MariaDB) store exactly what the plain path stores ----------------------

def test_the_universe_slice_lands_the_same_with_and_without_workers(empty_db_url, tmp_path, request):
    plain = second_url(request, tmp_path)
    ahead = import_paths(SLICE, empty_db_url, progress=False)              # 40 files: workers read ahead
    alone = import_paths(SLICE, plain, progress=False, workers=0)
    assert [str(r) for r in ahead] == [str(r) for r in alone] and all(r.ok for r in ahead)
    assert sum(r.rows for r in ahead) == sum(len(read_kline_csv(p)) for p in SLICE)
    assert table_dump(empty_db_url) == table_dump(plain)
    assert versions(empty_db_url) == versions(plain)
    assert {s: v[:2] for s, v in versions(plain).items()} == {s: (1, n) for s, n in
                                                              StockDataLoader(plain).summary()['rows'].items()}


# --- jump warnings of new bars, checked in memory, are those of the full check ------------------------------------

def test_new_bars_are_checked_for_jumps_against_the_stored_bar_before_them(empty_db_url, tmp_path):
    first = write(tmp_path / 'a.csv', [PLAIN_HEADER, '600000,2022-01-04,100,105,98,102,1000,102000,',
                                       '000001,2022-01-04,10,11,9,10,1000,10000,'])
    import_file(first, empty_db_url)
    later = write(tmp_path / 'b.csv', [PLAIN_HEADER,                      # two symbols, out of order, no pre_close
                                       '000001,2022-01-06,10,11,9,10.5,1000,10000,',
                                       '600000,2022-01-06,10.4,10.7,10.3,10.5,9000,94500,',
                                       '600000,2022-01-05,10.2,10.6,10.1,10.4,12000,124800,',
                                       '000001,2022-01-05,10,31,9,30,1000,10000,'])
    result = import_file(later, empty_db_url)
    with get_engine(empty_db_url).connect() as conn:
        full = suspicious_bars(conn, ['000001.SZ', '600000.SH'], '2022-01-05', '2022-01-06').query('problem == "jump"')
    assert result.warnings == [f'{r.symbol} {r.trade_date:%Y-%m-%d}: {r.detail}' for r in full.itertuples()]
    assert [w[:21] for w in result.warnings] == ['000001.SZ 2022-01-05:', '000001.SZ 2022-01-06:',
                                               '600000.SH 2022-01-05:']
    assert 'from previous close 102' in result.warnings[2]


# --- data_version and the fingerprint -------------------------------------------------------------------------------

def test_the_fingerprint_changes_exactly_where_an_import_changed_bars(empty_db_url, tmp_path):
    loader = StockDataLoader(empty_db_url)
    rows = ['600000,2022-01-04,10.0,10.5,9.8,10.2,1000,10200,10.0',
            '600000,2022-01-05,10.2,10.6,10.1,10.4,1200,12480,10.2',
            '000001,2022-01-04,15.0,15.5,14.8,15.2,3000,45600,15.0',
            '000001,2022-01-05,15.2,15.6,15.1,15.4,3100,47740,15.2']
    base = write(tmp_path / 'base.csv', [PLAIN_HEADER, *rows])
    import_file(base, empty_db_url)
    fp = loader.fingerprint()
    assert fp == {'000001.SZ': [1, 2, '2022-01-05'], '600000.SH': [1, 2, '2022-01-05']}

    again = import_file(base, empty_db_url)                          # the same file: nothing changes
    assert again.new_rows == again.changed_rows == 0
    assert loader.fingerprint() == fp and fingerprint_digest(loader.fingerprint()) == fingerprint_digest(fp)

    one_day = write(tmp_path / 'day.csv', [PLAIN_HEADER, '600000,2022-01-06,10.4,10.7,10.3,10.5,900,9450,10.4'])
    import_file(one_day, empty_db_url)                               # one more day of one symbol
    after = loader.fingerprint()
    assert after['000001.SZ'] == fp['000001.SZ'] and after['600000.SH'] == [2, 3, '2022-01-06']
    assert fingerprint_digest(after) != fingerprint_digest(fp)
    assert loader.fingerprint(['000001.SZ']) == {'000001.SZ': fp['000001.SZ']}

    changed = write(tmp_path / 'changed.csv', [PLAIN_HEADER, rows[2].replace(',3000,', ',3333,')])
    with pytest.raises(importer.ImportValidationError): import_file(changed, empty_db_url)
    assert loader.fingerprint() == after                             # refused: nothing bumped
    result = import_file(changed, empty_db_url, replace=True)
    assert result.changed_rows == 1 and loader.fingerprint()['000001.SZ'] == [2, 2, '2022-01-05']
    assert loader.fingerprint()['600000.SH'] == after['600000.SH']


def test_a_database_from_before_data_version_gets_it_filled_from_its_bars(empty_db_url, tmp_path):
    import_paths(SLICE[:3], empty_db_url, progress=False)
    expected = versions(empty_db_url)
    with get_engine(empty_db_url).begin() as conn: conn.exec_driver_sql('DROP TABLE data_version')
    loader = StockDataLoader(empty_db_url)
    assert {s: v[1:] for s, v in loader.fingerprint().items()} == {s: [v[1], f'{v[3]:%Y-%m-%d}']
                                                                     for s, v in expected.items()}
    assert versions(empty_db_url) == expected                       # version 1 each, rows and dates counted


# --- the progress line ----------------------------------------------------------------------------------------------

def test_the_progress_line_goes_to_stderr_only_when_asked(tmp_path, capsys):
    url = f'sqlite:///{tmp_path / "p.sqlite"}'
    import_paths(SLICE[:3], url, progress=True)
    out, err = capsys.readouterr()
    rows = sum(len(read_kline_csv(p)) for p in SLICE[:3])
    assert out == '' and '3/3' in err and f'{rows:,} rows' in err and 'rows/s' in err
    import_paths(SLICE[3:5], url)                                    # not a terminal, not asked: silent
    assert capsys.readouterr() == ('', '')


def test_db_import_passes_progress_on(tmp_path):
    env = {**os.environ, 'QUANTNB_HOME': str(tmp_path)}
    url = f'sqlite:///{tmp_path / "cli.sqlite"}'
    r = subprocess.run([QUANTNB, 'db', 'import', '--url', url, '--progress', *map(str, SLICE[:2])],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and 'rows/s' in r.stderr and 'rows/s' not in r.stdout
    r = subprocess.run([QUANTNB, 'db', 'import', '--url', url, *map(str, SLICE[2:4])],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and 'rows/s' not in r.stderr and '2 file(s) imported' in r.stdout


def _dies(*args):
    os._exit(3)


def test_a_worker_that_dies_leaves_its_files_to_the_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(importer, '_read_ahead', _dies)           # (inherited by the forked workers)
    url = f'sqlite:///{tmp_path / "w.sqlite"}'
    results = import_paths(SLICE[:20], url, progress=False, workers=2)
    assert len(results) == 20 and all(r.ok for r in results)
    assert StockDataLoader(url).summary()['rows'].sum() == sum(r.rows for r in results)
