"""Leakage guards through the whole pipeline (loader -> features -> targets -> split -> windows).

1. No training window covers a date that is a label date of any test sample, for any stock.
2. Labels shuffled at the source give chance-level test accuracy; a deliberately leaked feature,
   through the same pipeline and classifier, gives near-perfect accuracy (so the check has teeth).
"""
import numpy as np
import pytest
import torch

from quantnb.data.datasets import build_datasets, walk_forward_splits
from quantnb.data.db import StockDataLoader
from quantnb.data.features import FEATURES, register_feature


@pytest.fixture(scope='module')
def bars():
    return StockDataLoader().load_many()


def covered_dates(bundle, segment, what):
    "Dates covered by the windows (`what='window'`) or the label spans (`'label'`) of a segment's samples."
    ends = bundle.segment(segment).ends.numpy()
    n = len(bundle.dates)
    lo, hi = (ends - bundle.seq_len + 1, ends + 1) if what == 'window' else (ends + 1, ends + bundle.horizon + 1)
    marks = np.zeros(n + 1, int)
    np.add.at(marks, lo, 1); np.add.at(marks, np.minimum(hi, n), -1)
    return set(bundle.dates[np.cumsum(marks)[:n] > 0].tolist())


@pytest.mark.parametrize('horizon, seq_len', [(7, 60), (1, 20), (20, 120)])
def test_no_training_window_overlaps_a_test_label_date(bars, horizon, seq_len):
    bundle = build_datasets(bars, 'basic11', seq_len=seq_len, horizon=horizon)
    train_windows = covered_dates(bundle, 'train', 'window')
    train_labels = covered_dates(bundle, 'train', 'label')
    for later in ('val', 'test'):
        later_labels = covered_dates(bundle, later, 'label')
        assert not train_windows & later_labels
        assert not train_labels & later_labels
    assert not covered_dates(bundle, 'val', 'label') & covered_dates(bundle, 'test', 'label')


def test_walk_forward_folds_keep_labels_apart(bars):
    for split in walk_forward_splits(bars.index.get_level_values('trade_date'), n_folds=3, test_days=250, val_days=250,
                                     gap_days=7):
        bundle = build_datasets(bars, 'basic11', seq_len=30, horizon=7, split=split)
        assert not covered_dates(bundle, 'train', 'label') & covered_dates(bundle, 'test', 'label')
        assert not covered_dates(bundle, 'train', 'window') & covered_dates(bundle, 'test', 'label')


def fit_and_score(bundle, steps=300, seed=0):
    "Multinomial logistic regression on flattened windows; test accuracy and the test majority-class share."
    torch.manual_seed(seed)
    def xy(name):
        ds = bundle.segment(name)
        ends = ds.ends
        idx = ends[:, None] - torch.arange(bundle.seq_len - 1, -1, -1)
        return ds.values[idx].reshape(len(ends), -1), ds.targets[ends]
    (xtr, ytr), (xte, yte) = xy('train'), xy('test')
    model = torch.nn.Linear(xtr.shape[1], 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(xtr), ytr).backward(); opt.step()
    with torch.no_grad(): acc = (model(xte).argmax(1) == yte).float().mean().item()
    majority = torch.bincount(yte, minlength=3).max().item() / len(yte)
    return acc, majority, len(yte)


def test_shuffled_labels_give_chance_accuracy(bars):
    bundle = build_datasets(bars, 'basic11', seq_len=20, horizon=1, task='classification')
    labels = bundle.train.targets                      # one array shared by every segment
    valid = labels >= 0
    labels[valid] = labels[valid][torch.randperm(int(valid.sum()), generator=torch.Generator().manual_seed(0))]
    acc, majority, n = fit_and_score(bundle)
    margin = 3 * np.sqrt(majority * (1 - majority) / n)
    print(f'shuffled labels: test accuracy {acc:.3f}, majority class {majority:.3f}, n={n}')
    assert acc <= majority + margin


def test_a_leaked_feature_is_found_by_the_same_check(bars):
    "Positive control: tomorrow's return as a feature makes the same classifier near-perfect."
    register_feature('tomorrow', lambda b: np.r_[b.close[1:] / b.close[:-1] - 1, np.nan], "Tomorrow's return (a leak).")
    try:
        bundle = build_datasets(bars, ['ret_1', 'rsi_14', 'tomorrow'], seq_len=5, horizon=1, task='classification')
        acc, majority, _ = fit_and_score(bundle, steps=600)
    finally:
        del FEATURES['tomorrow']
    print(f'leaked feature: test accuracy {acc:.3f} vs majority {majority:.3f}')
    assert acc > 0.85
