"""Features: causality over every registered feature (hypothesis), scale-freeness, registry and errors."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from quantnb.data.db import StockDataLoader
from quantnb.data.features import (FEATURES, FEATURE_SETS, CausalityError, assert_causal, compute_features,
                                   feature_names, register_feature)


@pytest.fixture(scope='module')
def loader(): return StockDataLoader()


@pytest.fixture(scope='module')
def moutai(loader): return loader.load_kline_data('600519.SH').iloc[:420]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=410), seed=st.integers(0, 2**32 - 1))
def test_every_feature_is_causal(moutai, cut, seed):
    "Changing any bar after t leaves every feature at or before t bit-identical."
    assert_causal(moutai, cut, seed=seed)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=410), seed=st.integers(0, 2**32 - 1))
def test_panel_feature_sets_are_causal(moutai, cut, seed):
    "Alpha158 and Alpha360, computed over the whole panel at once, pass the same check."
    names = list(dict.fromkeys(feature_names('alpha158') + feature_names('alpha360')))   # OPEN0 .. VWAP0 in both
    assert_causal(moutai, cut, names=names, seed=seed)


def test_causality_check_catches_a_shift_minus_one(moutai):
    register_feature('leak', lambda b: pd.Series(b.close).pct_change().shift(-1).to_numpy(),
                     'Tomorrow\'s return (a leak).')
    try:
        with pytest.raises(CausalityError, match="'leak'"):
            assert_causal(moutai, cut=300, names=['ret_1', 'leak'])
        with pytest.raises(CausalityError):            # even when the cut is the very first row
            assert_causal(moutai, cut=0, names=['leak'])
    finally:
        del FEATURES['leak']


@pytest.mark.parametrize('symbol', ['000001.SZ', '000002.SZ', '000333.SZ', '000858.SZ', '002415.SZ', '300750.SZ',
                                    '600036.SH', '600276.SH',
                                    '600519.SH', '601318.SH'])
def test_features_identical_on_forward_and_backward_adjusted_bars(loader, symbol):
    qfq = compute_features(loader.load_kline_data(symbol, adjust='qfq'))
    hfq = compute_features(loader.load_kline_data(symbol, adjust='hfq'))
    pd.testing.assert_index_equal(qfq.index, hfq.index)
    np.testing.assert_allclose(qfq.to_numpy(), hfq.to_numpy(), rtol=1e-7, atol=1e-9)


def test_no_feature_depends_on_the_price_level(moutai):
    "Multiplying all prices by 1000 (a different share count) changes no feature."
    scaled = moutai.copy()
    scaled[['open', 'high', 'low', 'close', 'pre_close']] *= 1000.0
    np.testing.assert_allclose(compute_features(scaled).to_numpy(), compute_features(moutai).to_numpy(), rtol=1e-7,
                               atol=1e-9)


def test_registry_is_large_documented_and_sets_are_sized():
    assert len(FEATURES) >= 40
    for f in FEATURES.values():
        assert f.doc and '\n' not in f.doc.strip() and len(f.doc) > 15, f.name
    assert len(FEATURE_SETS['basic11']) == 11 and len(FEATURE_SETS['ta45']) == 45
    assert feature_names('all') == list(FEATURES)


def test_all_features_finite_after_warmup_on_every_sample_stock(loader):
    panel = compute_features(loader.load_many(), 'all')
    assert np.isfinite(panel.to_numpy()).all()
    counts = panel.groupby(level='symbol').size()
    assert (counts > 800).all() and len(counts) == 10


def test_panel_equals_stock_by_stock(loader):
    panel = compute_features(loader.load_many(['600519.SH', '000001.SZ']), 'ta45')
    alone = compute_features(loader.load_kline_data('000001.SZ'), 'ta45')
    pd.testing.assert_frame_equal(panel.loc['000001.SZ'], alone)


def test_warmup_rows_are_dropped_not_filled(moutai):
    full = compute_features(moutai, 'all', dropna=False)
    kept = compute_features(moutai, 'all')
    assert full.index.equals(moutai.index) and full.iloc[:59].isna().any(axis=1).all()
    assert kept.index.equals(full.dropna().index) and kept.index[0] == moutai.index[60]
    pd.testing.assert_frame_equal(kept, full.loc[kept.index])


def test_clear_errors(moutai):
    with pytest.raises(ValueError, match="unknown feature set 'ta50'"):
        compute_features(moutai, 'ta50')
    with pytest.raises(ValueError, match=r"unknown feature\(s\) \['rsi_15'\]"):
        compute_features(moutai, ['rsi_14', 'rsi_15'])
    with pytest.raises(ValueError, match="feature 'amount_ratio_20' needs column\\(s\\) \\['amount'\\]"):
        compute_features(moutai.drop(columns='amount'), ['ret_1', 'amount_ratio_20'])
    with pytest.raises(ValueError, match='sorted by date'):
        compute_features(moutai.iloc[::-1], 'basic11')
