"""Data problems that used to train silently or fail with the wrong cause: `StockDataLoader.check` on both
backends, and the message of a dataset left with too few samples."""
import pandas as pd
import pytest

from quantnb.data.datasets import build_datasets
from quantnb.data.db import StockDataLoader
from quantnb.data.importer import import_file


def test_the_sample_has_no_suspicious_bars(sample_db_url):
    assert StockDataLoader(sample_db_url).check().empty


def test_check_finds_a_split_zero_volume_and_a_short_history(empty_db_url, tmp_path):
    path = tmp_path / 'x.csv'
    path.write_text('symbol,trade_date,open,high,low,close,volume\n'
                    '600000,2022-01-04,100,105,98,102,1000\n600000,2022-01-05,10.2,10.6,10.1,10.4,0\n')
    import_file(path, empty_db_url)
    found = StockDataLoader(empty_db_url).check(min_rows=3)
    assert sorted(found.problem) == ['few_rows', 'jump', 'zero_volume'] and set(found.symbol) == {'600000.SH'}
    assert (found.trade_date == pd.Timestamp('2022-01-05')).all()


@pytest.fixture(scope='module')
def bars():
    return StockDataLoader().load_kline_data('600519.SH')


def test_a_short_history_names_seq_len_not_zero_trading_days(bars):
    with pytest.raises(ValueError) as err:
        build_datasets(bars.iloc[:30], seq_len=20)
    text = str(err.value)
    assert '0 of 30 bars' in text and '19 bars with fewer than seq_len=20' in text


def test_zero_volume_days_are_named_as_the_cause(bars):
    damaged = bars.iloc[:200].copy()
    damaged.loc[damaged.index[::3], 'volume'] = 0
    with pytest.raises(ValueError) as err:
        build_datasets(damaged, seq_len=20)
    assert 'undefined features (zero-volume days' in str(err.value) and 'quantnb db check' in str(err.value)
