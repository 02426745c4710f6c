"""The importer: both CSV formats, validation that names file/line/field, one transaction per file, upserts."""
import gzip
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from quantnb.core import SAMPLE_DIR
from quantnb.data import importer
from quantnb.data.db import StockDataLoader
from quantnb.data.importer import (ImportValidationError, import_file, import_paths, read_kline_csv,
                                   read_stock_basic_csv, sample_files)
from conftest import table_dump

PLAIN_HEADER = 'symbol,trade_date,open,high,low,close,volume,amount,pre_close'
GOOD_ROWS = ['600000,2022-01-04,10.0,10.5,9.8,10.2,1000,10200,10.0',
             '600000,2022-01-05,10.2,10.6,10.1,10.4,1200,12480,10.2',
             '600000,2022-01-06,10.4,10.7,10.3,10.5,900,9450,10.4']
VENDOR_BANNER = '数据由邢不行整理'
VENDOR_HEADER = '股票代码,股票名称,交易日期,开盘价,最高价,最低价,收盘价,前收盘价,成交量,成交额,流通市值,总市值'


def write(path: Path, lines, encoding='utf-8'):
    path.write_text('\n'.join(lines) + '\n', encoding=encoding)
    return path


@pytest.fixture
def db_with_rows(empty_db_url, tmp_path):
    "A database already holding three days of 600000, so an untouched table is visible as such."
    import_file(write(tmp_path / 'base.csv', [PLAIN_HEADER, *GOOD_ROWS]), empty_db_url)
    return empty_db_url


# --- at least eight kinds of bad file: each error names file, line and field; the database is unchanged ---

BAD_FILES = {
    'missing column':      ([PLAIN_HEADER.replace(',close', ''), '600000,2022-01-07,10.5,10.8,10.4,1000,10000,10.5'],
                            None, 'close', 'required column is missing'),
    'unparseable date':    ([PLAIN_HEADER, GOOD_ROWS[0], '600000,2022-13-45,10.5,10.8,10.4,10.6,1000,10600,10.5'],
                            3, 'trade_date', "'2022-13-45' is not a date"),
    'empty price':         ([PLAIN_HEADER, '600000,2022-01-07,10.5,,10.4,10.6,1000,10600,10.5'],
                            2, 'high', 'missing value'),
    'zero price':          ([PLAIN_HEADER, GOOD_ROWS[0], GOOD_ROWS[1],
                             '600000,2022-01-07,10.5,10.8,0,10.6,1000,10600,10.5'],
                            4, 'low', '0 is not a positive price'),
    'negative pre_close':  ([PLAIN_HEADER, '600000,2022-01-07,10.5,10.8,10.4,10.6,1000,10600,-10.5'],
                            2, 'pre_close', '-10.5 is not a positive price'),
    'high below low':      ([PLAIN_HEADER, '600000,2022-01-07,10.5,10.3,10.4,10.35,1000,10600,10.5'],
                            2, 'high', 'high 10.3 is below low 10.4'),
    'close above high':    ([PLAIN_HEADER, GOOD_ROWS[0], '600000,2022-01-07,10.5,10.8,10.4,10.9,1000,10600,10.5'],
                            3, 'close', 'close 10.9 is outside [low 10.4, high 10.8]'),
    'open below low':      ([PLAIN_HEADER, '600000,2022-01-07,10.1,10.8,10.4,10.6,1000,10600,10.5'],
                            2, 'open', 'open 10.1 is outside'),
    'negative volume':     ([PLAIN_HEADER, '600000,2022-01-07,10.5,10.8,10.4,10.6,-5,10600,10.5'],
                            2, 'volume', '-5 is negative'),
    'text in a number':    ([PLAIN_HEADER, '600000,2022-01-07,10.5,10.8,10.4,10.6,lots,10600,10.5'],
                            2, 'volume', "'lots' is not a number"),
    'duplicate date':      ([PLAIN_HEADER, *GOOD_ROWS, GOOD_ROWS[1]],
                            5, 'trade_date', 'duplicate date 2022-01-05 for 600000.SH (first on line 3)'),
    'bad symbol':          ([PLAIN_HEADER, 'AAPL,2022-01-07,10.5,10.8,10.4,10.6,1000,10600,10.5'],
                            2, 'symbol', "'AAPL' is not an A-share code"),
    'infinite value':      ([PLAIN_HEADER, '600000,2022-01-07,10.5,inf,10.4,10.6,1000,10600,10.5'],
                            2, 'high', "'inf' is not a number"),
    'vendor, banner kept': ([VENDOR_BANNER, VENDOR_HEADER,
                             'sh600000,浦发银行,2022-01-07,10.5,10.8,10.4,10.6,10.5,1000,10600,1e9,1e9',
                             'sh600000,浦发银行,2022-01-10,10.5,10.8,10.4,10.6,10.6,1000,NaN?,1e9,1e9'],
                            4, 'amount', "'NaN?' is not a number"),
    'ragged row':          ([PLAIN_HEADER, GOOD_ROWS[0], '600000,2022-01-07,10.5,10.8,10.4,10.6,1000,10600,10.5,1,2'],
                            None, None, 'not a well-formed CSV'),
    'unrecognised header': (['date;open;high;low;close', '2022-01-07;1;2;0.5;1.5'],
                            None, None, 'unrecognised header'),
    'header only':         ([PLAIN_HEADER], 1, None, 'no data rows'),
}


@pytest.mark.parametrize('kind', list(BAD_FILES))
def test_bad_file_is_refused_with_file_line_field_and_writes_nothing(db_with_rows, tmp_path, kind):
    lines, line, field, message = BAD_FILES[kind]
    path = write(tmp_path / f'{kind.replace(" ", "_").replace(",", "")}.csv', lines)
    before = table_dump(db_with_rows)
    with pytest.raises(ImportValidationError) as err:
        import_file(path, db_with_rows)
    text = str(err.value)
    print(text)
    assert str(path) in text and message in text
    if line is not None: assert f'line {line}' in text
    if field is not None: assert f"field '{field}'" in text
    assert table_dump(db_with_rows) == before


def test_empty_and_undecodable_files(tmp_path):
    with pytest.raises(ImportValidationError, match='file is empty'):
        read_kline_csv(write(tmp_path / 'empty.csv', ['']))
    (tmp_path / 'binary.csv').write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ImportValidationError):
        read_kline_csv(tmp_path / 'binary.csv')


def test_every_problem_is_counted_and_the_list_is_capped(tmp_path):
    rows = [f'600000,2022-02-{d:02d},10.5,10.8,10.4,0,1000,10600,10.5' for d in range(1, 26)]
    with pytest.raises(ImportValidationError) as err:
        read_kline_csv(write(tmp_path / 'many.csv', [PLAIN_HEADER, *rows]))
    assert len(err.value.problems) == 25 and '... and 15 more' in str(err.value)


def test_a_bad_row_deep_in_a_large_file_writes_nothing(empty_db_url, tmp_path):
    days = pd.bdate_range('2000-01-03', periods=8000)
    rows = [f'600000,{d:%Y-%m-%d},10,11,9,10,100,1000,10' for d in days]
    rows[6500] = rows[6500].replace(',11,9,', ',9,11,')          # high < low on line 6502
    with pytest.raises(ImportValidationError, match='line 6502'):
        import_file(write(tmp_path / 'big.csv', [PLAIN_HEADER, *rows]), empty_db_url)
    assert table_dump(empty_db_url) == []


def test_a_database_failure_mid_import_rolls_back_the_whole_file(db_with_rows, tmp_path, monkeypatch):
    "One transaction per file: a failure after the first chunk was written leaves the table as it was."
    real_upsert = importer.upsert_frame
    def upsert_then_fail(conn, table, df, chunk_rows=5000):
        real_upsert(conn, table, df.iloc[:len(df) // 2], chunk_rows=100)
        raise sa.exc.OperationalError('INSERT ...', {}, Exception('connection lost'))
    monkeypatch.setattr(importer, 'upsert_frame', upsert_then_fail)
    before = table_dump(db_with_rows)
    results = import_paths([SAMPLE_DIR / 'sh600519.csv.gz'], db_with_rows)
    assert not results[0].ok and 'connection lost' in results[0].error
    assert table_dump(db_with_rows) == before


def test_good_file_next_to_a_bad_one_is_still_imported(empty_db_url, tmp_path):
    bad = write(tmp_path / 'bad.csv', BAD_FILES['high below low'][0])
    results = import_paths([bad, SAMPLE_DIR / 'sz300750.csv.gz'], empty_db_url)
    assert [r.ok for r in results] == [False, True]
    assert 'line 2' in results[0].error and results[1].rows == 877
    assert StockDataLoader(empty_db_url).list_symbols() == ['300750.SZ']


# --- upsert semantics ---------------------------------------------------------------------------------

def test_reimport_changes_nothing(db_with_rows, tmp_path):
    path = write(tmp_path / 'again.csv', [PLAIN_HEADER, *GOOD_ROWS])
    before = table_dump(db_with_rows)
    result = import_file(path, db_with_rows)
    assert (result.rows, result.new_rows) == (3, 0)
    assert (result.changed_rows, result.unchanged_rows) == (0, 3) and '0 new, 0 changed, 3 unchanged' in str(result)
    assert table_dump(db_with_rows) == before


def test_a_file_that_changes_stored_bars_is_refused_unless_replace(db_with_rows, tmp_path):
    """A later file silently overwrote stored bars; now it is refused with the stored and new values, or replaced on
    request."""
    corrected = GOOD_ROWS[2].replace(',900,', ',950,')
    newer = '600000,2022-01-07,10.5,10.8,10.4,10.6,1000,10600,10.5'
    path = write(tmp_path / 'newer.csv', [PLAIN_HEADER, GOOD_ROWS[1], corrected, newer])
    before = table_dump(db_with_rows)
    with pytest.raises(ImportValidationError) as err:
        import_file(path, db_with_rows)
    text = str(err.value)
    assert str(path) in text and "line 3, field 'volume'" in text and 'volume stored 900, new 950' in text
    assert '--replace' in text
    assert table_dump(db_with_rows) == before
    result = import_file(path, db_with_rows, replace=True)
    assert (result.rows, result.new_rows, result.changed_rows, result.unchanged_rows) == (3, 1, 1, 1)
    assert result.replaced == ['600000.SH 2022-01-06 (line 3): volume 900 -> 950']
    assert '1 new, 1 replaced, 1 unchanged' in str(result)
    assert len(table_dump(db_with_rows)) == 4
    bars = StockDataLoader(db_with_rows).load_kline_data('600000.SH', adjust=None)
    assert bars.volume.tolist() == [1000, 1200, 950, 1000]


def test_a_file_without_optional_columns_keeps_stored_values(empty_db_url, tmp_path):
    import_file(SAMPLE_DIR / 'sz300750.csv.gz', empty_db_url)
    before = StockDataLoader(empty_db_url).load_kline_data('300750.SZ', adjust=None).iloc[-1]
    last = read_kline_csv(SAMPLE_DIR / 'sz300750.csv.gz').iloc[-1]
    minimal = f'300750,{last.trade_date:%Y-%m-%d},{last.open},{last.high},{last.low},{last.close},{last.volume}'
    import_file(write(tmp_path / 'minimal.csv', ['symbol,trade_date,open,high,low,close,volume', minimal]),
                empty_db_url)
    after = StockDataLoader(empty_db_url).load_kline_data('300750.SZ', adjust=None).iloc[-1]
    pd.testing.assert_series_equal(before, after)
    assert after.total_market_cap > 0 and after.pre_close > 0


# --- formats ------------------------------------------------------------------------------------------

def test_every_sample_file_validates(tmp_path):
    frames = [read_kline_csv(p) for p in sample_files()[1:]]
    assert sum(map(len, frames)) == 25722
    assert all(f.trade_date.is_monotonic_increasing for f in frames)


def test_vendor_file_in_gbk_and_plain_gzip_read_the_same(tmp_path):
    vendor = read_kline_csv(SAMPLE_DIR / 'sh600519.csv.gz')
    text = gzip.decompress((SAMPLE_DIR / 'sh600519.csv.gz').read_bytes()).decode('utf-8')
    (tmp_path / 'gbk.csv').write_bytes(text.encode('gbk'))
    pd.testing.assert_frame_equal(read_kline_csv(tmp_path / 'gbk.csv'), vendor)
    plain = tmp_path / 'plain.csv.gz'
    vendor.assign(trade_date=vendor.trade_date.dt.strftime('%Y%m%d')).to_csv(plain, index=False)
    pd.testing.assert_frame_equal(read_kline_csv(plain), vendor)


def test_directories_are_expanded(empty_db_url, tmp_path):
    write(tmp_path / 'a.csv', [PLAIN_HEADER, *GOOD_ROWS])
    write(tmp_path / 'notes.txt', ['not data'])
    (tmp_path / 'b.csv.gz').write_bytes((SAMPLE_DIR / 'sz300750.csv.gz').read_bytes())
    results = import_paths([tmp_path], empty_db_url)
    assert [r.path.name for r in results] == ['a.csv', 'b.csv.gz'] and all(r.ok for r in results)


def test_stock_list_import_and_its_errors(empty_db_url, tmp_path):
    result = import_file(SAMPLE_DIR / 'stock_basic.csv.gz', empty_db_url)
    assert (result.kind, result.rows, result.new_rows) == ('stock_basic', 10, 10)
    assert import_file(SAMPLE_DIR / 'stock_basic.csv.gz', empty_db_url).new_rows == 0
    header = 'ts_code,symbol,name,area,industry,cnspell,market,list_date,act_name,act_ent_type'
    bad = write(tmp_path / 'basic.csv', [header, '600519.SH,600519,贵州茅台,贵州,白酒,GZMT,主板,20010827,,',
                                         '600000.XX,600000,浦发银行,上海,银行,PFYH,主板,19991110,,',
                                         '000001.SZ,000002,平安银行,深圳,银行,PAYH,主板,19910403,,',
                                         '600036.SH,600036,招商银行,深圳,银行,ZSYH,主板,2002-04-09,,',
                                         '600519.SH,600519,贵州茅台,贵州,白酒,GZMT,主板,20010827,,'])
    before = table_dump(empty_db_url, 'stock_basic_info')
    with pytest.raises(ImportValidationError) as err:
        import_file(bad, empty_db_url)
    text = str(err.value)
    for expected in ["line 3, field 'ts_code'", "line 4, field 'symbol'", "line 5, field 'list_date'",
                     "line 6, field 'symbol': duplicate symbol 600519"]:
        assert expected in text
    assert table_dump(empty_db_url, 'stock_basic_info') == before


def test_a_stock_list_is_not_read_as_bars(tmp_path):
    with pytest.raises(ImportValidationError, match='stock_basic file, not daily bars'):
        read_kline_csv(SAMPLE_DIR / 'stock_basic.csv.gz')
    with pytest.raises(ImportValidationError, match='kline file, not a stock list'):
        read_stock_basic_csv(SAMPLE_DIR / 'sh600519.csv.gz')


# --- what a plain file may hold: A-share codes only, three date spellings, `date` for `trade_date` ---------

@pytest.mark.parametrize('written', ['2022-01-04', '2022/01/04', '20220104'])
def test_each_documented_date_format_is_read(tmp_path, written):
    bars = read_kline_csv(write(tmp_path / 'd.csv', [PLAIN_HEADER, GOOD_ROWS[0].replace('2022-01-04', written)]))
    assert bars.trade_date.tolist() == [pd.Timestamp('2022-01-04')]


@pytest.mark.parametrize('written', ['04/01/2022', '2022.01.04', 'Jan 4 2022', '2022-1-4x'])
def test_other_date_spellings_are_refused_with_what_to_write(tmp_path, written):
    with pytest.raises(ImportValidationError) as err:
        read_kline_csv(write(tmp_path / 'd.csv', [PLAIN_HEADER, GOOD_ROWS[0].replace('2022-01-04', written)]))
    assert (f"line 2, field 'trade_date': {written!r} is not a date "
            '(write 2023-01-04, 2023/01/04 or 20230104)') in str(err.value)


def test_a_date_column_is_read_as_trade_date(empty_db_url, tmp_path):
    path = write(tmp_path / 'dated.csv', [PLAIN_HEADER.replace('trade_date', 'date'), *GOOD_ROWS])
    result = import_file(path, empty_db_url)
    assert (result.rows, result.new_rows) == (3, 3)
    assert StockDataLoader(empty_db_url).load_kline_data('600000', adjust=None).index[0] == pd.Timestamp('2022-01-04')


@pytest.mark.parametrize('symbol', ['６００５１９', '\u0666\u0660\u0660\u0665\u0661\u0669', 'sh６００５１９', 'AAPL'])
def test_only_ascii_six_digit_codes_are_symbols(db_with_rows, tmp_path, symbol):
    path = write(tmp_path / 'wide.csv', [PLAIN_HEADER, GOOD_ROWS[0].replace('600000', symbol)])
    before = table_dump(db_with_rows)
    with pytest.raises(ImportValidationError, match='is not an A-share code'):
        import_file(path, db_with_rows)
    assert table_dump(db_with_rows) == before


# --- a corrupt .gz is one bad file; large files are read in chunks ----------------------------------------

@pytest.mark.parametrize('damage', ['truncated', 'corrupt'])
def test_a_damaged_gzip_fails_that_file_alone(empty_db_url, tmp_path, damage):
    data = (SAMPLE_DIR / 'sh600519.csv.gz').read_bytes()
    bad = tmp_path / 'a_bad.csv.gz'
    if damage == 'truncated': bad.write_bytes(data[:len(data) // 2])
    else: bad.write_bytes(data[:200] + bytes(b ^ 0x5A for b in data[200:400]) + data[400:])
    results = import_paths([bad, SAMPLE_DIR / 'sz300750.csv.gz'], empty_db_url)
    assert [r.ok for r in results] == [False, True]
    assert str(bad) in results[0].error and 'truncated or corrupt' in results[0].error
    assert StockDataLoader(empty_db_url).list_symbols() == ['300750.SZ']


def test_chunks_keep_line_numbers_duplicates_and_all_or_nothing(empty_db_url, tmp_path):
    days = pd.bdate_range('2001-01-01', periods=250)
    rows = [f'600000,{d:%Y-%m-%d},10,11,9,10,100,1000,10' for d in days]
    good = write(tmp_path / 'good.csv', [PLAIN_HEADER, *rows])
    pd.testing.assert_frame_equal(read_kline_csv(good, chunk_rows=40), read_kline_csv(good))
    rows[230] = rows[12]                                   # a date of chunk 1 repeated in chunk 6
    rows[200] = rows[200].replace(',11,9,', ',9,11,')      # and a bad row in chunk 6
    with pytest.raises(ImportValidationError) as err:
        import_file(write(tmp_path / 'bad.csv', [PLAIN_HEADER, *rows]), empty_db_url, chunk_rows=40)
    text = str(err.value)
    assert "line 202, field 'high'" in text and "line 232, field 'trade_date'" in text and '(first on line 14)' in text
    assert table_dump(empty_db_url) == []


def test_a_stock_name_longer_than_its_column_fails_the_same_on_both_backends(empty_db_url, tmp_path):
    header = 'ts_code,symbol,name,area,industry,market,list_date'
    path = write(tmp_path / 'basic.csv', [header, f'600519.SH,600519,{"茅" * 70},贵州,白酒,主板,20010827'])
    with pytest.raises(ImportValidationError) as err:
        import_file(path, empty_db_url)
    assert "line 2, field 'name'" in str(err.value)
    assert 'is 70 characters; the column holds at most 64' in str(err.value)
    assert table_dump(empty_db_url, 'stock_basic_info') == []


# --- suspicious jumps ------------------------------------------------------------------------------------

def test_an_unadjusted_split_is_imported_with_a_warning_naming_the_date(empty_db_url, tmp_path, caplog):
    rows = ['600000,2022-01-04,100,105,98,102,1000,102000,',
            '600000,2022-01-05,10.2,10.6,10.1,10.4,12000,124800,',   # a 10-for-1 split, no pre_close
            '600000,2022-01-06,10.4,10.7,10.3,10.5,9000,94500,']
    with caplog.at_level('WARNING', logger='quantnb.data.importer'):
        result = import_file(write(tmp_path / 'split.csv', [PLAIN_HEADER, *rows]), empty_db_url)
    assert result.ok and result.rows == 3
    assert len(result.warnings) == 1 and result.warnings[0].startswith('600000.SH 2022-01-05: close 10.4 is -90%')
    assert '2022-01-05' in caplog.text and 'warning: 600000.SH 2022-01-05' in str(result)
    adjusted = '600000,2022-01-05,10.2,10.6,10.1,10.4,12000,124800,10.2'   # the exchange's ex-rights pre_close: fine
    ok = import_file(write(tmp_path / 'ok.csv', [PLAIN_HEADER, rows[0], adjusted]), empty_db_url, replace=True)
    assert ok.warnings == []
