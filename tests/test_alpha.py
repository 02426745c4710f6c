"""Alpha158 / Alpha360 (quantnb.data.alpha) against a direct pandas computation of Qlib's expressions, on real stocks of
the bundled universe slice: every family, every window, NaN until a window is full, no window across stocks or
suspensions, any chunking, the feature-set hooks, and bad values."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

import alpha_oracle as oracle
from quantnb.data.alpha import (ALPHA158_NAMES, ALPHA360_NAMES, ALPHA_WINDOWS, ROLLING_FAMILIES, alpha158, alpha360,
                                warmup_bars)
from quantnb.data.db import StockDataLoader
from quantnb.data.features import FEATURE_SETS, assert_causal, compute_features, feature_names
from quantnb.data.importer import import_paths
from quantnb.data.universe import UNIVERSE_SLICE_DIR

MOUTAI, MIDEA = '600519.SH', '000333.SZ'        # Midea was suspended for 11 trading days in 2019
THIRD = '300750.SZ'


@pytest.fixture(scope='module')
def bars(tmp_path_factory):
    url = f'sqlite:///{tmp_path_factory.mktemp("alpha") / "slice.sqlite"}'
    files = [UNIVERSE_SLICE_DIR / f'{c}.csv.gz' for c in ('sh600519', 'sz000333', 'sz300750')]
    assert all(r.ok for r in import_paths(files, url))
    return StockDataLoader(url).load_many([MOUTAI, MIDEA, THIRD])


@pytest.fixture(scope='module')
def fast158(bars): return alpha158(bars)


@pytest.fixture(scope='module')
def expected158(bars): return {s: oracle.alpha158(bars.loc[s]) for s in (MOUTAI, MIDEA)}


def same(got: pd.Series, want: pd.Series, rtol=1e-5, atol=1e-6):
    "Equal NaN patterns and values within float32 precision."
    got, want = got.to_numpy(np.float64), want.to_numpy(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def test_names_follow_qlib():
    assert feature_names('alpha158') == ALPHA158_NAMES and len(ALPHA158_NAMES) == 158
    assert ALPHA158_NAMES[:13] == ['KMID', 'KLEN', 'KMID2', 'KUP', 'KUP2', 'KLOW', 'KLOW2', 'KSFT', 'KSFT2',
                                   'OPEN0', 'HIGH0', 'LOW0', 'VWAP0']
    assert ALPHA158_NAMES[13:18] == ['ROC5', 'ROC10', 'ROC20', 'ROC30', 'ROC60']
    assert ALPHA158_NAMES[-5:] == ['VSUMD5', 'VSUMD10', 'VSUMD20', 'VSUMD30', 'VSUMD60']
    assert feature_names('alpha360') == ALPHA360_NAMES
    assert ALPHA360_NAMES[:2] == ['CLOSE59', 'CLOSE58'] and ALPHA360_NAMES[59:61] == ['CLOSE0', 'OPEN59']
    assert ALPHA360_NAMES[-1] == 'VOLUME0' and len(FEATURE_SETS['alpha360']) == 360


def test_suspension_gap_is_in_the_data(bars):
    "Midea misses 11 market days that Moutai traded: the gap the rolling windows must step over."
    moutai, midea = bars.loc[MOUTAI].index, bars.loc[MIDEA].index
    missing = moutai.difference(midea)
    assert len(missing) == 11 and midea[0] == moutai[0]


@pytest.mark.parametrize('symbol', [MOUTAI, MIDEA])
def test_candle_and_price_ratios(fast158, expected158, symbol):
    for name in ALPHA158_NAMES[:13]: same(fast158.loc[symbol, name], expected158[symbol][name])


@pytest.mark.parametrize('family', ROLLING_FAMILIES)
def test_every_rolling_family_every_window(fast158, expected158, family):
    for symbol in (MOUTAI, MIDEA):
        for d in ALPHA_WINDOWS:
            same(fast158.loc[symbol, f'{family}{d}'], expected158[symbol][f'{family}{d}'])


def test_alpha360_matches_its_definition(bars):
    fast = alpha360(bars)
    assert list(fast.columns) == ALPHA360_NAMES and fast.index.equals(bars.index)
    for symbol in (MOUTAI, MIDEA):
        want = oracle.alpha360(bars.loc[symbol])
        for name in ALPHA360_NAMES: same(fast.loc[symbol, name], want[name])


def test_nan_exactly_until_the_window_is_full(fast158):
    midea = fast158.loc[MIDEA]
    for name, first in (('MA60', 59), ('ROC60', 60), ('CORD5', 5), ('VSUMD60', 60), ('KMID', 0), ('RANK20', 19),
                        ('IMXD30', 29)):
        assert midea[name].iloc[:first].isna().all() and midea[name].iloc[first:].notna().all(), name
        assert warmup_bars(name) == first


def test_windows_count_trading_days_across_a_suspension(bars, fast158):
    "The day after the 11-day suspension: MA5 and ROC5 use the last 5 bars, not the last 5 market days."
    midea = bars.loc[MIDEA]
    gaps = np.flatnonzero(np.diff(midea.index.values) > np.timedelta64(7, 'D'))
    after = gaps[0] + 1
    close = midea.close.to_numpy()
    np.testing.assert_allclose(fast158.loc[MIDEA, 'MA5'].iloc[after], close[after - 4:after + 1].mean() / close[after],
                               rtol=1e-6)
    np.testing.assert_allclose(fast158.loc[MIDEA, 'ROC5'].iloc[after], close[after - 5] / close[after], rtol=1e-6)


def test_no_window_crosses_stocks(bars, fast158):
    "Each stock computed alone equals its rows in the panel, bit for bit; a stock's first rows stay NaN."
    for symbol in (MOUTAI, MIDEA, THIRD):
        alone = alpha158(bars.loc[[symbol]])
        pd.testing.assert_frame_equal(alone, fast158.loc[[symbol]], check_exact=True)
    assert fast158.loc[THIRD, 'MA5'].iloc[:4].isna().all()


def test_single_stock_frame_and_any_row_order(bars, fast158):
    one = bars.loc[MIDEA]
    pd.testing.assert_frame_equal(alpha158(one), fast158.loc[MIDEA], check_exact=True)
    by_date = bars.sort_index(level='trade_date', sort_remaining=True)      # stocks interleaved day by day
    pd.testing.assert_frame_equal(alpha158(by_date), fast158.loc[by_date.index], check_exact=True)


@pytest.mark.parametrize('chunk_rows', [64, 192, 4096])
def test_chunking_changes_nothing(bars, fast158, chunk_rows):
    pd.testing.assert_frame_equal(alpha158(bars, chunk_rows=chunk_rows), fast158, check_exact=True)


def test_forward_and_backward_adjusted_bars_agree(bars, fast158, tmp_path):
    "Prices and volume are adjusted by the same per-stock constant in qfq and hfq: the features barely move."
    loader_url = f'sqlite:///{tmp_path / "hfq.sqlite"}'
    assert all(r.ok for r in import_paths([UNIVERSE_SLICE_DIR / 'sh600519.csv.gz'], loader_url))
    hfq = alpha158(StockDataLoader(loader_url).load_many([MOUTAI], adjust='hfq'))
    np.testing.assert_allclose(hfq.to_numpy(np.float64), fast158.loc[[MOUTAI]].to_numpy(np.float64),
                               rtol=1e-4, atol=1e-5)


def test_compute_features_accepts_the_sets(bars, fast158):
    feats = compute_features(bars, 'alpha158', dropna=False)
    pd.testing.assert_frame_equal(feats, fast158)
    assert (feats.dtypes == np.float32).all()
    kept = compute_features(bars, 'alpha158')
    assert kept.index.equals(feats.dropna().index) and len(kept) == len(bars) - 3 * 60
    mixed = compute_features(bars, ['ret_1', 'CLOSE0', 'KMID', 'VOLUME59', 'rsi_14'], dropna=False)
    assert list(mixed.columns) == ['ret_1', 'CLOSE0', 'KMID', 'VOLUME59', 'rsi_14'] and mixed.index.equals(bars.index)
    pd.testing.assert_series_equal(mixed['KMID'], fast158['KMID'])
    np.testing.assert_allclose(mixed['CLOSE0'].dropna(), 1.0)
    per_stock = compute_features(bars, ['ret_1', 'rsi_14'], dropna=False)
    pd.testing.assert_frame_equal(mixed[['ret_1', 'rsi_14']], per_stock.loc[bars.index])


def test_each_set_is_computed_once_and_only_when_needed(bars, monkeypatch):
    from quantnb.data import features
    calls = []
    for name in ('alpha158', 'alpha360'):
        fs = features.PANEL_SETS[name]
        counted = lambda b, fn=fs.fn, name=name: calls.append(name) or fn(b)
        monkeypatch.setitem(features.PANEL_SETS, name, dataclasses.replace(fs, fn=counted))
    compute_features(bars, 'alpha360')
    assert calls == ['alpha360']
    out = compute_features(bars, ['KMID', 'OPEN0', 'CLOSE5', 'VWAP0', 'MA5'], dropna=False)
    assert calls == ['alpha360', 'alpha158', 'alpha360'] and list(out.columns) == ['KMID', 'OPEN0', 'CLOSE5', 'VWAP0',
                                                                                   'MA5']


@pytest.mark.parametrize('cut', [0, 1, 58, 59, 60, 61, 137, 400])
def test_causal(bars, cut):
    names = list(dict.fromkeys(ALPHA158_NAMES + ALPHA360_NAMES))          # OPEN0 .. VWAP0 are in both
    assert_causal(bars.loc[MIDEA].iloc[:450], cut, names=names, seed=cut)


def test_bad_values_poison_only_their_windows(bars):
    "A missing close, an infinite high and a zero volume: NaN in the windows that hold them, the rest unchanged."
    broken = bars.loc[[MIDEA]].copy()
    broken.iloc[200, broken.columns.get_loc('close')] = np.nan
    broken.iloc[300, broken.columns.get_loc('high')] = np.inf
    broken.iloc[400, broken.columns.get_loc('volume')] = 0.0
    fast, want = alpha158(broken), oracle.alpha158(broken.droplevel(0))
    for name in ALPHA158_NAMES:
        clean_want = want[name].where(np.isfinite(want[name]))
        same(fast[name].droplevel(0), clean_want)
    pd.testing.assert_frame_equal(alpha158(broken, chunk_rows=64), fast, check_exact=True)   # bad rows at chunk edges
    assert np.isnan(fast['MA20'].iloc[200:220]).all() and np.isfinite(fast['MA20'].iloc[220])
    assert np.isfinite(fast['MA20'].iloc[199]) and np.isfinite(fast['VMA20'].iloc[200:230]).all()


def test_clear_errors(bars):
    with pytest.raises(ValueError, match=r"need column\(s\) \['amount'\]"):
        alpha158(bars.drop(columns='amount'))
    with pytest.raises(ValueError, match='sorted by date'):
        compute_features(bars.loc[[MIDEA]].iloc[::-1], 'alpha158')
    with pytest.raises(ValueError, match='multiple of 64'):
        alpha158(bars, chunk_rows=100)
    with pytest.raises(ValueError, match="unknown feature set 'alpha159'.*'alpha158'"):
        feature_names('alpha159')


def test_a_panel_set_goes_into_a_preallocated_array_as_compute_features_gives_it():
    "The feature cache writes stock by stock with `features_into`: panel sets included, identical values."
    from quantnb.data.features import features_into
    bars = StockDataLoader().load_kline_data('600519')
    names = ['ret_1'] + feature_names('alpha158')[:20] + ['CLOSE5']
    out = np.empty((len(bars), len(names)), np.float32)
    features_into(bars, names, out)
    np.testing.assert_array_equal(out, compute_features(bars, names, dropna=False).to_numpy(np.float32))
