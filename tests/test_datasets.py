"""Targets, splits with purge gaps, normalisation fit on training rows only, zero-copy windows."""
import numpy as np
import pandas as pd
import pytest
import torch

from quantnb.data.datasets import (SEGMENTS, Normalizer, Split, WindowDataset, build_datasets, chronological_split,
                                   class_balance, datasets_from_features, direction_labels, load_datasets,
                                   make_dataloaders, make_targets, walk_forward_splits)
from quantnb.data.db import StockDataLoader
from quantnb.data.features import compute_features


@pytest.fixture(scope='module')
def panel():
    return StockDataLoader().load_many(['600519.SH', '000001.SZ', '300750.SZ'])


@pytest.fixture(scope='module')
def bundle(panel):
    return build_datasets(panel, 'basic11', seq_len=40, horizon=5)


# --- targets ----------------------------------------------------------------------------------------

def test_future_returns_are_per_stock_and_exact(panel):
    t = make_targets(panel, horizon=3)
    for sym in ['600519.SH', '300750.SZ']:
        close = panel.loc[sym].close.to_numpy()
        got = t.loc[sym]
        np.testing.assert_allclose(got.fwd_ret_3.to_numpy()[:-3], close[3:] / close[:-3] - 1, rtol=1e-12)
        # no future from the next stock
        assert got.fwd_ret_1.iloc[-1:].isna().all() and got.fwd_ret_3.iloc[-3:].isna().all()
    assert set(t.columns) == {'fwd_ret_1', 'fwd_ret_2', 'fwd_ret_3', 'next_return', 'direction'}


def test_direction_labels_and_balance():
    labels = direction_labels([-0.02, -0.004, 0.0, 0.005, 0.0051, np.nan], flat_threshold=0.005)
    np.testing.assert_array_equal(labels[:5], [0, 1, 1, 1, 2]) and np.isnan(labels[5])
    assert class_balance(labels) == {'down': 0.2, 'flat': 0.6, 'up': 0.2}
    with pytest.raises(ValueError, match='horizon'):
        make_targets(pd.DataFrame({'close': [1.0, 2.0]}), horizon=0)


# --- splits -----------------------------------------------------------------------------------------

def test_split_assigns_by_date_and_purges_before_each_boundary():
    days = pd.bdate_range('2020-01-01', periods=100)
    split = Split(val_start=days[60], test_start=days[80], gap_days=5)
    gap_end = pd.Series(days).shift(-5)
    seg = split.assign(days, gap_end)
    assert (seg[:55] == 0).all() and (seg[55:60] == -1).all()       # last five training days purged
    assert (seg[60:75] == 1).all() and (seg[75:80] == -1).all()
    assert (seg[80:95] == 2).all() and (seg[95:] == -1).all()        # no label beyond the data


def test_purge_counts_each_stocks_own_trading_days():
    "A stock suspended just before the boundary: its gap is measured in its own bars, so it loses more calendar days."
    days = pd.bdate_range('2020-01-01', periods=100)
    own_days = days.delete(range(50, 58))                              # suspended for 8 days
    gap_end = pd.Series(own_days).shift(-5)
    seg = Split(val_start=days[60], test_start=days[80], gap_days=5).assign(own_days, gap_end)
    train_dates = own_days[seg == 0]
    assert train_dates.max() < days[50]
    assert (pd.Series(own_days).shift(-5)[seg == 0] < days[60]).all()


def test_chronological_split_fractions_and_errors(panel):
    dates = panel.index.get_level_values('trade_date')
    s = chronological_split(dates, train=0.6, val=0.2, gap_days=7)
    days = np.unique(dates)
    assert s.val_start == days[int(len(days) * 0.6)] and s.test_start == days[int(len(days) * 0.8)]
    assert Split.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match='fractions'):
        chronological_split(dates, train=0.9, val=0.2)
    with pytest.raises(ValueError, match='before test_start'):
        Split('2021-01-01', '2020-01-01', 7)


def test_walk_forward_folds_are_ordered_and_disjoint(panel):
    folds = walk_forward_splits(panel.index.get_level_values('trade_date'), n_folds=3, test_days=200, val_days=200,
                                train_days=800)
    for a, b in zip(folds, folds[1:]):
        assert a.test_end < b.test_start and a.val_start < b.val_start and a.train_start < b.train_start
    assert folds[-1].test_end == panel.index.get_level_values('trade_date').max()
    with pytest.raises(ValueError, match='cannot hold'):
        walk_forward_splits(panel.index.get_level_values('trade_date'), n_folds=20, test_days=250)


def test_gap_shorter_than_horizon_is_refused(panel):
    with pytest.raises(ValueError, match='gap_days=3 is shorter than horizon=7'):
        build_datasets(panel, 'basic11', seq_len=20, horizon=7, gap_days=3)


# --- the bundle -------------------------------------------------------------------------------------

def test_labels_never_cross_a_segment_boundary(bundle):
    idx = {s: bundle.sample_index(s) for s in SEGMENTS}
    assert idx['train'].label_end.max() < pd.Timestamp(bundle.split.val_start) <= idx['val'].date.min()
    assert idx['val'].label_end.max() < pd.Timestamp(bundle.split.test_start) <= idx['test'].date.min()
    for s in SEGMENTS: assert len(idx[s]) > 100


def test_windows_are_views_of_one_array_and_never_cross_stocks(bundle, panel):
    x, _ = bundle.train[5]
    assert x.untyped_storage().data_ptr() == bundle.train.values.untyped_storage().data_ptr()
    for s in SEGMENTS:
        ends = bundle.segment(s).ends.numpy()
        starts = ends - bundle.seq_len + 1
        assert (bundle.symbol_codes[starts] == bundle.symbol_codes[ends]).all()
        assert bundle.segment(s).values.data_ptr() == bundle.train.values.data_ptr()   # shared, not copied per segment


def test_window_content_is_the_normalised_features_of_those_days(bundle, panel):
    features = compute_features(panel, 'basic11', dropna=False)
    idx = bundle.sample_index('test')
    row = idx.iloc[17]
    window = features.loc[row.symbol].loc[row.window_start:row.date]
    x, y = bundle.test[17]
    norm = bundle.normalizer
    expected = np.clip((window.to_numpy() - norm.stats['*']['center']) / norm.stats['*']['scale'], -10, 10)
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    close = panel.loc[row.symbol].close
    t = close.index.get_loc(row.date)
    np.testing.assert_allclose(y.numpy(), close.iloc[t + 1:t + 6].to_numpy() / close.iloc[t] - 1, rtol=1e-5)


def test_normalizer_sees_only_training_rows(panel):
    "Rewriting every feature value after val_start leaves the fitted statistics unchanged."
    features = compute_features(panel, 'basic11', dropna=False)
    a = datasets_from_features(features, panel, seq_len=30, horizon=5)
    poisoned = features.copy()
    late = poisoned.index.get_level_values('trade_date') >= pd.Timestamp(a.split.val_start)
    poisoned.loc[late] = poisoned.loc[late] * 100 + 7
    b = datasets_from_features(poisoned, panel, seq_len=30, horizon=5, split=a.split)
    assert a.normalizer.stats == b.normalizer.stats


@pytest.mark.parametrize('method', ['zscore', 'robust'])
def test_normalizer_round_trips_and_falls_back_for_unknown_symbols(panel, method):
    features = compute_features(panel, 'basic11', dropna=False).dropna()
    symbols = features.index.get_level_values('symbol').to_numpy()
    rows = features.index.get_level_values('trade_date') < pd.Timestamp('2018-01-01')
    norm = Normalizer(method, per_symbol=True, clip=None).fit(features, rows, symbols)
    assert '300750.SZ' not in norm.stats                                   # listed in 2018: no training rows
    again = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.transform(features, symbols), norm.transform(features, symbols))
    z = norm.transform(features, symbols)
    train_600519 = rows & (symbols == '600519.SH')
    centre = np.median if method == 'robust' else np.mean
    np.testing.assert_allclose(centre(z[train_600519], axis=0), 0, atol=1e-4)
    new_stock = symbols == '300750.SZ'
    pooled = (features[new_stock].to_numpy() - norm.stats['*']['center']) / norm.stats['*']['scale']
    np.testing.assert_allclose(z[new_stock], pooled, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='normalization'):
        Normalizer('minmax')


def test_classification_bundle_reports_class_balance():
    b = load_datasets('600519.SH', seq_len=20, horizon=1, task='classification')
    meta = b.meta()
    for s in SEGMENTS:
        bal = meta['segments'][s]['class_balance']
        assert abs(sum(bal.values()) - 1) < 1e-3 and min(bal.values()) > 0.1
    x, y = b.train[0]
    assert y.dtype == torch.int64 and 0 <= int(y) <= 2


def test_meta_is_json_and_carries_what_a_run_needs(bundle):
    import json
    meta = json.loads(json.dumps(bundle.meta()))
    assert meta['feature_names'] == bundle.feature_names and meta['seq_len'] == 40 and meta['horizon'] == 5
    assert meta['split']['val_start'] == f'{bundle.split.val_start:%Y-%m-%d}'
    assert Normalizer.from_dict(meta['normalizer']).stats == bundle.normalizer.stats


def test_dataloaders_shuffle_train_reproducibly(bundle):
    a = next(iter(make_dataloaders(bundle, batch_size=16, seed=3)['train']))[0]
    b = next(iter(make_dataloaders(bundle, batch_size=16, seed=3)['train']))[0]
    c = next(iter(make_dataloaders(bundle, batch_size=16, seed=4)['train']))[0]
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (16, 40, 11)
    v1 = next(iter(make_dataloaders(bundle, batch_size=16, seed=3)['val']))[0]
    assert torch.equal(v1[0], bundle.val[0][0])                         # evaluation is in order


def test_bad_inputs(panel):
    with pytest.raises(ValueError, match='task'):
        build_datasets(panel, seq_len=20, task='ranking')
    with pytest.raises(ValueError, match='no training samples'):
        build_datasets(panel.loc[['300750.SZ']], seq_len=200, split=Split('2018-09-01', '2020-01-01', 7))
    with pytest.raises(ValueError, match='C-contiguous float32'):
        WindowDataset(np.zeros((10, 3)), np.zeros(10), np.arange(5, 10), 3)
