"""Name history stored on import, listing/delisting dates, and per-day trading status (suspension, ST, board, price
limits) on real days of the bundled universe slice."""
import gzip
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantnb.data.db import StockDataLoader, UnknownSymbolError, name_spells
from quantnb.data.importer import ImportValidationError, import_file, import_paths
from quantnb.data.status import board_of, code_digits, load_trading_status, mark_new_listings, trading_status
from quantnb.data.universe import UNIVERSE_SLICE_DIR, read_status, universe_slice_files
from conftest import table_dump


def vendor_lines(code: str) -> tuple[list[str], list[str]]:
    "Banner and header, and the data lines, of a slice file."
    banner, header, *rows = gzip.decompress((UNIVERSE_SLICE_DIR / f'{code}.csv.gz').read_bytes()).decode().split('\n')
    return [banner, header], [r for r in rows if r]


def write_vendor(path: Path, head: list[str], rows: list[str]) -> Path:
    path.write_text('\n'.join(head + rows) + '\n', encoding='utf-8')
    return path


def spells_oracle(code: str) -> pd.DataFrame:
    "Spells computed independently from the vendor file's name column (pandas groupby on name changes)."
    df = read_status([UNIVERSE_SLICE_DIR / f'{code}.csv.gz'])
    run = df['name'].ne(df['name'].shift()).cumsum()
    g = df.groupby(run)
    return pd.DataFrame({'symbol': g['symbol'].first(), 'start_date': g['trade_date'].first(),
                         'end_date': g['trade_date'].last(), 'name': g['name'].first()}).reset_index(drop=True)


def same_spells(a: pd.DataFrame, b: pd.DataFrame):
    cols = ['symbol', 'start_date', 'end_date', 'name']
    a, b = a[cols].reset_index(drop=True), b[cols].reset_index(drop=True)
    for c in ('start_date', 'end_date'): a[c], b[c] = a[c].astype('datetime64[ns]'), b[c].astype('datetime64[ns]')
    pd.testing.assert_frame_equal(a.astype({'name': object, 'symbol': object}),
                                  b.astype({'name': object, 'symbol': object}))


@pytest.fixture(scope='module')
def slice_url(tmp_path_factory):
    url = f'sqlite:///{tmp_path_factory.mktemp("status") / "slice.sqlite"}'
    results = import_paths(universe_slice_files(), url)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return url


@pytest.fixture(scope='module')
def status(slice_url):
    return load_trading_status(url=slice_url)


# --- name history ---

@pytest.mark.parametrize('code', ['sz000422', 'sz300202', 'sz002450', 'sh688981'])
def test_stored_spells_equal_the_files_name_runs(slice_url, code):
    same_spells(StockDataLoader(slice_url).name_history(code[2:]), spells_oracle(code))


def test_reimport_is_idempotent(empty_db_url, tmp_path):
    head, rows = vendor_lines('sz000422')
    path = write_vendor(tmp_path / 'sz000422.csv', head, rows)
    import_file(path, empty_db_url)
    before = table_dump(empty_db_url, 'stock_name_history')
    assert len(before) == 3
    import_file(path, empty_db_url)
    assert table_dump(empty_db_url, 'stock_name_history') == before


@pytest.mark.parametrize('newer_first', [False, True])
def test_a_file_extending_history_extends_and_adds_spells(tmp_path, newer_first):
    url = f'sqlite:///{tmp_path / "db.sqlite"}'
    head, rows = vendor_lines('sz000422')
    cut = next(i for i, r in enumerate(rows) if r.split(',')[2] >= '2020-01-01')   # inside the 'ST宜化' spell
    older = write_vendor(tmp_path / 'a.csv', head, rows[:cut])
    newer = write_vendor(tmp_path / 'b.csv', head, rows[cut:])
    first, second = (newer, older) if newer_first else (older, newer)
    import_file(first, url)
    assert StockDataLoader(url).name_history().name.tolist() == (['ST宜化', '湖北宜化'] if newer_first
                                                                 else ['*ST宜化', 'ST宜化'])
    import_file(second, url)
    same_spells(StockDataLoader(url).name_history(), spells_oracle('sz000422'))


def test_a_file_correcting_one_day_changes_only_that_day(tmp_path):
    url = f'sqlite:///{tmp_path / "db.sqlite"}'
    head, rows = vendor_lines('sz000422')
    import_file(write_vendor(tmp_path / 'all.csv', head, rows), url)
    i = next(i for i, r in enumerate(rows) if r.split(',')[2] == '2020-06-01')
    fixed = rows[i].replace('ST宜化', 'ST宜化B')
    import_file(write_vendor(tmp_path / 'one.csv', head, [fixed]), url)
    spells = StockDataLoader(url).name_history()
    assert spells.name.tolist() == ['*ST宜化', 'ST宜化', 'ST宜化B', 'ST宜化', '湖北宜化']
    one = spells[spells.name == 'ST宜化B'].iloc[0]
    assert one.start_date == one.end_date == pd.Timestamp('2020-06-01')


def test_a_failing_file_writes_no_names_and_no_bars(empty_db_url, tmp_path):
    head, rows = vendor_lines('sz000422')
    bad = rows[-1].split(',')
    bad[6] = 'oops'                                           # the last day's close: found after the first chunks
    path = write_vendor(tmp_path / 'bad.csv', head, rows[:-1] + [','.join(bad)])
    with pytest.raises(ImportValidationError, match='close'):
        import_file(path, empty_db_url, chunk_rows=100)      # earlier chunks were written, then rolled back
    assert table_dump(empty_db_url, 'stock_name_history') == []
    assert table_dump(empty_db_url) == []


def test_a_failing_file_leaves_stored_names_unchanged(tmp_path):
    url = f'sqlite:///{tmp_path / "db.sqlite"}'
    head, rows = vendor_lines('sz000422')
    import_file(write_vendor(tmp_path / 'good.csv', head, rows), url)
    before = table_dump(url, 'stock_name_history')
    renamed = [r.replace('宜化', '宜化X') for r in rows[:-1]] + [rows[-1].replace(',2021-12-31,', ',2021-13-31,')]
    with pytest.raises(ImportValidationError, match="'2021-13-31' is not a date"):
        import_file(write_vendor(tmp_path / 'bad.csv', head, renamed), url, chunk_rows=100)
    assert table_dump(url, 'stock_name_history') == before


def test_a_name_too_long_for_its_column_is_refused(tmp_path):
    url = f'sqlite:///{tmp_path / "db.sqlite"}'
    head, rows = vendor_lines('sz000422')
    cells = rows[5].split(',')
    cells[1] = '名' * 70
    with pytest.raises(ImportValidationError, match=r"line 8, field 'name'.*70 characters"):
        import_file(write_vendor(tmp_path / 'long.csv', head, rows[:5] + [','.join(cells)] + rows[6:]), url)
    assert table_dump(url, 'stock_name_history') == []


def test_plain_files_store_no_names_and_still_get_a_status(tmp_path):
    url = f'sqlite:///{tmp_path / "db.sqlite"}'
    lines = ['symbol,trade_date,open,high,low,close,volume,pre_close',
             '600000,2022-01-04,10.0,10.5,9.8,10.2,1000,10.0',
             '600000,2022-01-05,10.2,11.3,10.1,11.22,1200,10.2',
             '000001,2022-01-05,9.0,9.1,8.9,9.0,1000,9.0']
    (tmp_path / 'plain.csv').write_text('\n'.join(lines) + '\n')
    import_file(tmp_path / 'plain.csv', url)
    loader = StockDataLoader(url)
    assert loader.name_history().empty
    status = load_trading_status(url=url)
    assert status.loc[('600000.SH', '2022-01-05'), 'limit_up']            # 10.2 * 1.1 = 11.22
    assert not status['st'].any()
    listings = mark_new_listings(loader.listing_dates(), loader.name_history(), loader.trading_calendar()[0])
    assert listings.new_listing.tolist() == [True, False]              # 000001 starts after the first day
    assert np.isnan(status.loc[('000001.SZ', '2022-01-05'), 'limit_pct'])


# --- listing and delisting ---

def test_listing_and_delisting_dates_match_the_files(slice_url):
    listings = StockDataLoader(slice_url).listing_dates()
    oracle = read_status(universe_slice_files()).groupby('symbol')['trade_date'].agg(['min', 'max'])
    assert (listings.listing_date == oracle['min']).all()
    ended = oracle['max'][oracle['max'] < oracle['max'].max()]
    assert listings.delisting_date.dropna().to_dict() == ended.to_dict()
    assert set(ended.index) == {'000418.SZ', '002450.SZ', '300104.SZ', '600068.SH', '600485.SH'}
    assert listings.loc['600068.SH', 'delisting_date'] == pd.Timestamp('2021-09-01')


# --- per-day status on real days ---

REAL_DAYS = [   # symbol, day, column values from the vendor files (names, closes, pre_closes)
    ('000422.SZ', '2019-01-14', dict(name='*ST宜化', st=True, star_st=True, limit_pct=0.05, limit_up=True)),
    ('000422.SZ', '2019-04-25', dict(traded=False, limit_up=False, limit_down=False)),      # suspended
    ('000422.SZ', '2019-04-26', dict(name='ST宜化', st=True, star_st=False, limit_pct=0.05)),
    ('000422.SZ', '2021-06-15', dict(st=False, limit_pct=0.10, limit_up=True, limit_up_price=7.40)),
    ('600036.SH', '2020-07-06', dict(board='main', limit_pct=0.10, limit_up=True, limit_up_price=40.41)),
    ('300750.SZ', '2020-02-04', dict(board='chinext', limit_pct=0.10, limit_up=True, limit_up_price=148.90)),
    ('300202.SZ', '2021-04-29', dict(traded=False, name='聚龙股份')),                             # suspended
    ('300202.SZ', '2021-04-30', dict(st=True, star_st=True, limit_pct=0.20, limit_down=True, limit_down_price=4.95)),
    ('300202.SZ', '2021-05-07', dict(limit_pct=0.20, limit_up=True, limit_up_price=5.29)),
    ('300202.SZ', '2020-08-21', dict(limit_pct=0.10)),
    ('300202.SZ', '2020-08-24', dict(limit_pct=0.20)),
    ('688981.SH', '2020-07-16', dict(board='star', listed_days=1, name='N中芯')),
    ('688981.SH', '2020-07-23', dict(listed_days=6, limit_pct=0.20)),
    ('300782.SZ', '2019-06-19', dict(listed_days=2, limit_pct=0.10, limit_up=True)),
    ('601816.SH', '2020-01-17', dict(listed_days=2, limit_pct=0.10)),
]


@pytest.mark.parametrize('symbol,day,expected', REAL_DAYS)
def test_real_days(status, symbol, day, expected):
    row = status.loc[(symbol, pd.Timestamp(day))]
    for column, value in expected.items():
        assert row[column] == (pytest.approx(value) if isinstance(value, float) else value), column


@pytest.mark.parametrize('symbol,free', [('688981.SH', 5), ('688008.SH', 5), ('688111.SH', 5), ('300782.SZ', 1),
                                         ('601816.SH', 1)])
def test_new_listings_have_no_limit_on_their_first_days(status, symbol, free):
    pct = status.loc[symbol, 'limit_pct']
    assert pct.iloc[:free].isna().all() and pct.iloc[free:].notna().all()


def test_rows_are_the_calendar_between_first_and_last_bar(slice_url, status):
    bars = read_status(universe_slice_files())
    calendar = np.sort(bars.trade_date.unique())
    for symbol, days in bars.groupby('symbol')['trade_date']:
        rows = status.loc[symbol]
        expected = calendar[(calendar >= days.min().to_datetime64()) & (calendar <= days.max().to_datetime64())]
        assert (rows.index.to_numpy() == expected).all()
        assert set(rows.index[rows.traded]) == set(days)
        assert rows.listed_days.tolist() == list(range(1, len(rows) + 1))


def test_every_close_lies_within_its_limits(slice_url, status):
    closes = StockDataLoader(slice_url).load_many(adjust=None)['close']
    limited = status[status.traded & status.limit_pct.notna()]
    close = closes.reindex(limited.index)
    assert ((close <= limited.limit_up_price + 0.005) & (close >= limited.limit_down_price - 0.005)).all()
    # the limit prices again, in decimal arithmetic rounded half up: the same on every row
    pre = StockDataLoader(slice_url).load_many(adjust=None)['pre_close'].reindex(limited.index)
    def up_price(p, pct): return float((Decimal(str(p)) * (1 + Decimal(str(pct)))).quantize(Decimal('0.01'),
                                                                                              ROUND_HALF_UP))
    assert [up_price(p, x) for p, x in zip(pre, limited.limit_pct)] == limited.limit_up_price.tolist()
    assert limited.limit_up.sum() > 300


def test_a_date_range_is_a_slice_of_the_whole(slice_url, status):
    part = load_trading_status(['000422.SZ', '300202.SZ', '600068.SH'], '2020-08-01', '2020-09-30', url=slice_url)
    whole = status.loc[['000422.SZ', '300202.SZ', '600068.SH']]
    whole = whole[(whole.index.get_level_values(1) >= '2020-08-01') & (whole.index.get_level_values(1) <= '2020-09-30')]
    pd.testing.assert_frame_equal(part, whole)


def test_a_stock_suspended_all_through_the_range_gets_untraded_rows(slice_url):
    status = load_trading_status(['002450.SZ', '600519.SH'], '2020-01-01', '2020-12-31', url=slice_url)
    kangde = status.loc['002450.SZ']
    assert len(kangde) == len(status.loc['600519.SH']) and not kangde.traded.any()
    assert (kangde.name == '*ST康得').all() and kangde.star_st.all()


def test_trading_status_from_frames_equals_the_loader(slice_url, status):
    loader = StockDataLoader(slice_url)
    bars = loader.load_many(['000422.SZ', '300202.SZ'], adjust=None)
    out = trading_status(bars, loader.name_history(), loader.trading_calendar())
    pd.testing.assert_frame_equal(out, status.loc[['000422.SZ', '300202.SZ']])


# --- boards and bad input ---

def test_board_from_either_code_form():
    assert code_digits(['600519', '600519.SH', 'sz300750']).tolist() == ['600519', '600519', '300750']
    assert board_of(['688981.SH', '300750.SZ', '830799.BJ', '601318.SH']).tolist() == ['star', 'chinext', 'beijing',
                                                                                       'main']


def test_bad_input(slice_url):
    loader = StockDataLoader(slice_url)
    with pytest.raises(UnknownSymbolError, match="'999999.SH'"): load_trading_status(['600519', '999999'], url=loader)
    with pytest.raises(UnknownSymbolError, match="'999999.SH'"): loader.listing_dates('999999')
    with pytest.raises(ValueError, match='after end_date'):
        load_trading_status(['600519.SH'], '2021-02-01', '2021-01-01', url=loader)
    with pytest.raises(ValueError, match='not a date'): load_trading_status(['600519.SH'], 'soon', url=loader)
    with pytest.raises(ValueError, match='6-digit'): board_of(['AAPL'])
    with pytest.raises(ValueError, match='close'):
        trading_status(pd.DataFrame({'symbol': ['600519.SH'], 'trade_date': [pd.Timestamp('2021-01-04')]}),
                       loader.name_history(), loader.trading_calendar())


def test_name_spells_of_an_empty_frame():
    empty = name_spells(pd.DataFrame({'symbol': [], 'trade_date': pd.to_datetime([]), 'name': []}))
    assert list(empty.columns) == ['symbol', 'start_date', 'end_date', 'name'] and empty.empty


# --- MariaDB ---

def test_name_history_round_trips_on_each_backend(empty_db_url, slice_url, tmp_path):
    paths = [UNIVERSE_SLICE_DIR / f'{c}.csv.gz' for c in ('sz000422', 'sz300202', 'sh688981')]
    assert all(r.ok for r in import_paths(paths, empty_db_url))
    stored = StockDataLoader(empty_db_url).name_history()
    same_spells(stored, pd.concat([spells_oracle(p.name[:8]) for p in paths]).sort_values(['symbol', 'start_date']))
    assert (stored.name == StockDataLoader(slice_url).name_history(['000422.SZ', '300202.SZ', '688981.SH']).name).all()
    before = table_dump(empty_db_url, 'stock_name_history')
    import_paths(paths[:1], empty_db_url)
    assert table_dump(empty_db_url, 'stock_name_history') == before
    status = load_trading_status(['300202.SZ'], '2021-04-28', '2021-05-07', url=empty_db_url)
    assert status.traded.tolist() == [True, False, True, True, True]
    assert status.limit_pct.tolist() == [0.20] * 5 and status.st.tolist() == [False, False, True, True, True]
