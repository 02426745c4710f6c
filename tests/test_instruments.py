"""Instruments with their exchange: index vs stock codes, bare-code resolution, other markets, and the migration of a
database written by the previous release (bare six-digit codes), on SQLite and on MariaDB."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from quantnb.data.db import (AmbiguousSymbolError, SCHEMA_VERSION, StockDataLoader, UnknownSymbolError,
                             default_instrument, init_db, instrument_kind, migrate, schema_version, stock_kline_data,
                             universe)
from quantnb.data.importer import import_file, import_paths

LEGACY = Path(__file__).parent / 'data' / 'legacy_v1.sqlite'   # written by the release before instruments had exchanges
VENDOR_HEADER = '股票代码,股票名称,交易日期,开盘价,最高价,最低价,收盘价,前收盘价,成交量,成交额,流通市值,总市值'


def vendor_file(path, code, name, closes, start='2022-01-04'):
    "A vendor file of one instrument: `code` as the vendor writes it (sh000001), one bar per business day."
    days = pd.bdate_range(start, periods=len(closes))
    rows = [f'{code},{name},{d:%Y-%m-%d},{c},{c * 1.01:.2f},{c * 0.99:.2f},{c},{c},1000,10000,1e9,2e9'
            for d, c in zip(days, closes)]
    path.write_text('\n'.join(['banner', VENDOR_HEADER] + rows) + '\n', encoding='utf-8')
    return path


@pytest.fixture
def index_and_bank(tmp_path):
    "A database holding the SSE composite index 000001.SH and Ping An Bank 000001.SZ, with different prices."
    url = f'sqlite:///{tmp_path}/both.db'
    for code, name, price in (('sh000001', '上证指数', 3600.0), ('sz000001', '平安银行', 16.0)):
        import_file(vendor_file(tmp_path / f'{code}.csv', code, name, [price, price * 1.01, price * 1.02]), url)
    return url


def test_index_and_stock_with_the_same_digits_never_collide(index_and_bank):
    loader = StockDataLoader(index_and_bank)
    assert loader.list_symbols() == ['000001.SH', '000001.SZ']
    assert [instrument_kind(s) for s in loader.list_symbols()] == ['index', 'stock']
    index, bank = loader.load_kline_data('sh000001', adjust=None), loader.load_kline_data('000001.SZ', adjust=None)
    assert index.close.iloc[0] == 3600.0 and bank.close.iloc[0] == 16.0
    with pytest.raises(AmbiguousSymbolError, match='000001 names 000001.SH and 000001.SZ'):
        loader.load_kline_data('000001')


def test_a_bare_code_is_the_one_stored_instrument_or_the_stock_it_names(index_and_bank, tmp_path):
    url = f'sqlite:///{tmp_path}/index_only.db'
    import_file(vendor_file(tmp_path / 'sh000300.csv', 'sh000300', '沪深300', [4000.0, 4010.0]), url)
    loader = StockDataLoader(url)
    assert loader.resolve_symbols(['000300', 'sz000001']) == ['000300.SH', '000001.SZ']
    assert loader.load_kline_data('000300').attrs['symbol'] == '000300.SH'
    with pytest.raises(UnknownSymbolError, match="'600519.SH'"):   # not stored: read as the stock the code names
        loader.load_kline_data('600519')
    assert default_instrument('000001') == '000001.SZ'   # a plain file's bare code is the stock, never the index


def test_plain_csv_of_other_markets_imports_and_trains(tmp_path):
    "AAPL and MSFT from a plain CSV with a market column; a ticker without a market refuses only its own file."
    rng = np.random.default_rng(0)
    days = pd.bdate_range('2022-01-03', periods=260)
    rows = ['symbol,date,open,high,low,close,volume,market']
    for ticker, p0 in (('AAPL', 180.0), ('msft', 330.0)):   # made-up prices: the format is what is tested
        close = p0 * np.exp(np.cumsum(rng.normal(0, 0.015, len(days))))
        rows += [f'{ticker},{d:%Y-%m-%d},{c:.2f},{c * 1.01:.2f},{c * 0.99:.2f},{c:.2f},{int(rng.integers(1e6, 9e6))},US'
                 for d, c in zip(days, close)]
    good = tmp_path / 'us.csv'
    good.write_text('\n'.join(rows) + '\n')
    bad = tmp_path / 'no_market.csv'
    bad.write_text('symbol,date,open,high,low,close,volume\nTSLA,2022-01-03,100,101,99,100,1000\n')
    url = f'sqlite:///{tmp_path}/us.db'
    results = import_paths([bad, good], url)
    assert [r.ok for r in results] == [False, True]
    assert "'TSLA' is not an A-share code" in results[0].error and 'market' in results[0].error
    loader = StockDataLoader(url)
    assert loader.list_symbols() == ['AAPL', 'MSFT']
    assert loader.load_basic_info(['AAPL']).loc['AAPL', 'exchange'] == 'US'
    from quantnb.train.pipeline import run_training
    run = run_training(model='gru', symbols='AAPL,MSFT', db_url=url, epochs=1, seq_len=20, horizon=5,
                       model_kwargs='{"hidden_size": 8}', out_dir=str(tmp_path / 'out'), progress=False)
    assert run.manager.metadata['status'] == 'completed'
    assert sorted(run.manager.saved_model().symbols) == ['AAPL', 'MSFT']


def _legacy_rows():
    "Every row of the legacy database, table by table."
    engine = sa.create_engine(f'sqlite:///{LEGACY}')
    with engine.connect() as conn:
        rows = {t: pd.read_sql_table(t, conn) for t in ('stock_basic_info', 'stock_kline_data', 'universe')}
    engine.dispose()
    return rows


def check_migrated(url):
    loader = StockDataLoader(url)
    assert loader.list_symbols() == ['000001.SZ', '300750.SZ', '600519.SH']
    assert loader.load_basic_info().index.tolist() == ['000001.SZ', '300750.SZ', '600519.SH']
    spells = loader.universe_members('mini')
    assert sorted(spells.symbol) == ['000001.SZ', '600519.SH']
    assert loader.universe_members('mini', '2013-01-02') == ['000001.SZ', '600519.SH']
    assert len(loader.load_kline_data('600519')) == 80   # a bare code still works where it is unambiguous


def test_an_old_sqlite_database_is_migrated_on_first_open(tmp_path):
    db = tmp_path / 'old.sqlite'
    shutil.copy(LEGACY, db)
    url = f'sqlite:///{db}'
    check_migrated(url)   # the loader's first connection migrated it
    with init_db(url).connect() as conn: assert schema_version(conn) == SCHEMA_VERSION
    assert migrate(url) == {}


def test_an_old_mariadb_database_is_migrated_in_one_transaction(make_mysql_db):
    "The previous release's schema and rows on MariaDB; a migration that fails half-way leaves every row as it was."
    url = make_mysql_db('qnb_migrate')
    engine = sa.create_engine(url)
    rows = _legacy_rows()
    from quantnb.data.db import stock_basic_info
    with engine.begin() as conn:   # the tables as the previous release made them: no quantnb_meta
        for t in (stock_basic_info, stock_kline_data, universe): t.create(conn)
        for name, df in rows.items(): df.to_sql(name, conn, if_exists='append', index=False)
    # A failure inside the migration (a universe row whose renamed key already exists) rolls everything back.
    with engine.begin() as conn:
        conn.execute(universe.insert().values(name='mini', symbol='600519.SH', start_date=pd.Timestamp('2012-01-01'),
                                              end_date=pd.Timestamp('2030-01-01')))
    with pytest.raises(sa.exc.IntegrityError):
        migrate(url)
    with engine.connect() as conn:
        bare = conn.execute(sa.select(sa.func.count()).select_from(stock_kline_data)
                            .where(stock_kline_data.c.symbol == '600519')).scalar()
        assert bare == 80 and schema_version(conn) is None
    with engine.begin() as conn: conn.execute(universe.delete().where(universe.c.symbol == '600519.SH'))
    renamed = migrate(url)
    assert renamed == {'stock_kline_data': 240, 'stock_basic_info': 3, 'universe': 2}
    check_migrated(url)
    engine.dispose()


def test_db_migrate_command(tmp_path, capsys):
    from quantnb.cli import main
    db = tmp_path / 'old.sqlite'
    shutil.copy(LEGACY, db)
    assert main(['db', 'migrate', '--url', f'sqlite:///{db}']) == 0
    out = capsys.readouterr().out
    assert 'to schema 2' in out and '240 stock_kline_data rows renamed' in out
    assert main(['db', 'migrate', '--url', f'sqlite:///{db}']) == 0
    assert 'is up to date' in capsys.readouterr().out
