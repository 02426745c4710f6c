"""StockDataLoader against the bundled sample, the same suite on SQLite and on MariaDB."""
import numpy as np
import pandas as pd
import pytest

from quantnb.core import SAMPLE_DIR
from quantnb.data.db import (DatabaseNotInitialisedError, EmptyRangeError, StockDataLoader, UnknownSymbolError)
from quantnb.data.importer import read_kline_csv

SAMPLE_SYMBOLS = ['000001.SZ', '000002.SZ', '000333.SZ', '000858.SZ', '002415.SZ', '300750.SZ',
                  '600036.SH', '600276.SH', '600519.SH', '601318.SH']


@pytest.fixture(scope='module')
def loader(sample_db_url):
    return StockDataLoader(sample_db_url)


def test_lists_the_sample_symbols(loader):
    assert loader.list_symbols() == SAMPLE_SYMBOLS


def test_raw_bars_round_trip_exactly(loader):
    "What comes out of the database (raw) is exactly what the vendor file holds."
    stored = loader.load_kline_data('600519.SH', adjust=None)
    source = read_kline_csv(SAMPLE_DIR / 'sh600519.csv.gz').set_index('trade_date').drop(columns='symbol')
    assert stored.index.name == 'trade_date' and isinstance(stored.index, pd.DatetimeIndex)
    assert stored.index.is_monotonic_increasing and stored.index.is_unique
    pd.testing.assert_frame_equal(stored[source.columns], source, check_freq=False, check_names=False)
    assert 'adj_factor' not in stored


@pytest.mark.parametrize('spelling', ['600519', 'sh600519', 'SH600519', '600519.SH', ' 600519 ', 600519])
def test_symbol_spellings_are_equivalent(loader, spelling):
    got = loader.load_kline_data(spelling, '2021-06-01', '2021-06-30', adjust=None)
    assert len(got) == 21 and got.attrs['symbol'] == '600519.SH'


def test_date_range_is_inclusive_and_accepts_many_forms(loader):
    a = loader.load_kline_data('000001.SZ', '2021-01-04', '2021-01-08', adjust=None)
    assert list(a.index.strftime('%Y-%m-%d')) == ['2021-01-04', '2021-01-05', '2021-01-06', '2021-01-07', '2021-01-08']
    b = loader.load_kline_data('000001.SZ', pd.Timestamp('2021-01-04'), '20210108', adjust=None)
    pd.testing.assert_frame_equal(a, b)


def test_weekend_only_range_is_an_empty_range_error(loader):
    with pytest.raises(EmptyRangeError,
                       match=r'000001.SZ has no bars between 2021-01-02 and 2021-01-03; stored range is '
                       r'2010-01-04\.\.2022-01-14'):
        loader.load_kline_data('000001.SZ', '2021-01-02', '2021-01-03')


def test_unknown_symbol_names_it(loader):
    with pytest.raises(UnknownSymbolError, match="'688981.SH'"):
        loader.load_kline_data('688981.SH')


@pytest.mark.parametrize('hostile', ["x' OR 1=1 --", "600519' OR '1'='1", "600519; DROP TABLE stock_kline_data; --",
                                     '%', '_00519', "') UNION SELECT * FROM stock_basic_info --"])
def test_hostile_symbols_are_just_unknown(loader, sample_db_url, hostile):
    before = len(loader.load_many(adjust=None))
    with pytest.raises(UnknownSymbolError):
        loader.load_kline_data(hostile)
    assert len(loader.load_many(adjust=None)) == before == 25722


@pytest.mark.parametrize('kwargs, message', [
    (dict(start_date='2021-02-01', end_date='2021-01-01'), 'after end_date'),
    (dict(start_date='yesterday'), "start_date='yesterday' is not a date"),
    (dict(end_date='2021-13-01'), 'end_date'),
    (dict(adjust='forward'), 'adjust='),
])
def test_bad_arguments_are_clear_errors(loader, kwargs, message):
    with pytest.raises(ValueError, match=message):
        loader.load_kline_data('600519.SH', **kwargs)


def test_load_many_indexes_by_symbol_and_date(loader):
    df = loader.load_many(['sz000001', '600519.SH', '600519.SH'], '2021-01-01', '2021-12-31')
    assert list(df.index.names) == ['symbol', 'trade_date']
    assert df.index.get_level_values('symbol').unique().tolist() == ['000001.SZ', '600519.SH']
    assert df.index.is_unique and df.index.is_monotonic_increasing
    assert df.groupby(level='symbol').size().tolist() == [243, 243]


def test_load_many_defaults_to_every_symbol(loader):
    df = loader.load_many(adjust=None)
    assert len(df) == 25722
    assert df.index.get_level_values('symbol').unique().tolist() == SAMPLE_SYMBOLS


def test_load_many_reports_every_unknown_symbol(loader):
    with pytest.raises(UnknownSymbolError, match="'999998.SH', '999999.SH'"):
        loader.load_many(['600519.SH', '999998.SH', '999999.SH'])


# --- price adjustment on Kweichow Moutai's real dividends -------------------------------------------------

@pytest.fixture(scope='module')
def moutai(loader):
    return {a: loader.load_kline_data('600519.SH', adjust=a) for a in (None, 'qfq', 'hfq')}


def test_600519_has_real_ex_dividend_days(moutai):
    raw = moutai[None]
    ratio = raw.close.shift() / raw.pre_close
    ex_days = raw.index[(ratio - 1).abs() > 1e-6]
    assert len(ex_days) >= 11                      # an annual dividend, 2010-2021
    assert (ratio.loc[ex_days] > 1).all()          # dividends lower the reference price


@pytest.mark.parametrize('adjust', ['qfq', 'hfq'])
def test_adjusted_returns_have_no_jump_on_ex_days(moutai, adjust):
    raw, adj = moutai[None], moutai[adjust]
    exchange_return = (raw.close / raw.pre_close - 1).iloc[1:]
    np.testing.assert_allclose(adj.close.pct_change().iloc[1:], exchange_return, rtol=0, atol=1e-12)
    raw_return = raw.close.pct_change().iloc[1:]
    jump = (raw_return - exchange_return).abs()
    assert jump.max() > 0.01                       # the raw series does jump...
    # ...the adjusted one does not
    assert (adj.close / adj.pre_close - adj.close.pct_change().add(1) ).iloc[1:].abs().max() < 1e-12


def test_forward_keeps_latest_price_backward_keeps_first(moutai):
    raw, qfq, hfq = moutai[None], moutai['qfq'], moutai['hfq']
    assert qfq.close.iloc[-1] == pytest.approx(raw.close.iloc[-1], rel=1e-12)
    assert hfq.close.iloc[0] == pytest.approx(raw.close.iloc[0], rel=1e-12)
    assert qfq.close.iloc[0] < raw.close.iloc[0] and hfq.close.iloc[-1] > raw.close.iloc[-1]
    ratio = hfq.close / qfq.close                  # the two differ by one constant per stock
    np.testing.assert_allclose(ratio, ratio.iloc[0], rtol=1e-12)
    for col in ['open', 'high', 'low']:
        np.testing.assert_allclose(qfq[col] / raw[col], qfq.adj_factor, rtol=1e-12)
    pd.testing.assert_series_equal(qfq.volume, raw.volume)


@pytest.mark.parametrize('adjust', ['qfq', 'hfq'])
@pytest.mark.parametrize('start, end', [('2015-01-01', '2015-12-31'), ('2019-07-01', None), (None, '2012-06-30')])
def test_ranged_adjusted_load_is_a_slice_of_the_full_load(loader, moutai, adjust, start, end):
    part = loader.load_kline_data('600519.SH', start, end, adjust=adjust)
    full = moutai[adjust].loc[start:end]
    pd.testing.assert_frame_equal(part, full, check_freq=False, rtol=1e-12)


def test_adjustment_is_per_symbol(loader):
    both = loader.load_many(['000001.SZ', '600519.SH'], adjust='qfq')
    for sym in ['000001.SZ', '600519.SH']:
        alone = loader.load_kline_data(sym, adjust='qfq')
        np.testing.assert_allclose(both.loc[sym].close, alone.close, rtol=1e-12)


def test_basic_info_keeps_chinese_names_and_dates(loader):
    info = loader.load_basic_info(['600519.SH', 'sz300750'])
    assert info.loc['600519.SH', 'name'] == '贵州茅台' and info.loc['300750.SZ', 'market'] == '创业板'
    assert info.loc['600519.SH', 'exchange'] == 'SH'
    assert info.loc['300750.SZ', 'list_date'] == pd.Timestamp('2018-06-11')
    assert len(loader.load_basic_info()) == 10


def test_summary_counts_rows_and_dates(loader):
    s = loader.summary()
    assert s.rows.sum() == 25722 and s.loc['300750.SZ', 'first_date'] == pd.Timestamp('2018-06-11')
    assert s.loc['600519.SH', 'name'] == '贵州茅台'


def test_an_empty_database_says_how_to_initialise_it(tmp_path):
    import sqlite3
    sqlite3.connect(tmp_path / 'empty.sqlite').close()
    with pytest.raises(DatabaseNotInitialisedError, match='quantnb db init'):
        StockDataLoader(f'sqlite:///{tmp_path / "empty.sqlite"}').list_symbols()


def test_default_database_is_created_with_the_sample_on_first_use(quantnb_home):
    from quantnb.core import default_db_path
    assert default_db_path().parent == quantnb_home
    loader = StockDataLoader()
    assert default_db_path().exists()
    assert loader.list_symbols() == SAMPLE_SYMBOLS
    assert not [p for p in quantnb_home.iterdir() if p.name.endswith('.tmp')]
