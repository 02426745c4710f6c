"Whole-day batches and the `ic` loss for cross-sectional training."
import numpy as np
import pytest
import torch

from quantnb.data.datasets import DayBatchSampler, build_datasets, make_dataloaders, sample_days
from quantnb.data.db import StockDataLoader
from quantnb.models.core import LOSSES, make_loss


@pytest.fixture(scope='module')
def bundle():
    panel = StockDataLoader().load_many(['600519.SH', '000001.SZ', '300750.SZ'])
    return build_datasets(panel, 'basic11', seq_len=40, horizon=5)


@pytest.mark.parametrize('k', [1, 3])
def test_day_batches_are_whole_days_once_an_epoch(bundle, k):
    "Each batch is k whole days (the last may be fewer); every day's samples come together, exactly once."
    days = sample_days(bundle, 'train')
    assert (np.diff(bundle.dates[bundle.train.ends.numpy()][np.argsort(days)]).astype(np.int64) >= 0).all()
    sampler = DayBatchSampler(days, days_per_batch=k, shuffle=True, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-len(np.unique(days)) // k)
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(len(days)))              # every sample exactly once
    for b in batches:
        in_batch = np.unique(days[b])
        assert len(in_batch) <= k
        assert len(b) == np.isin(days, in_batch).sum()                       # all of each of its days
    assert [len(np.unique(days[b])) for b in batches[:-1]] == [k] * (len(batches) - 1)
    second = list(sampler)                                                   # a new epoch: a new order
    if k == 1: assert sorted(map(tuple, second)) == sorted(map(tuple, batches))   # the same days, ...
    assert second != batches                                                        # ... in another order


def test_day_batches_are_deterministic_for_a_seed(bundle):
    order = lambda seed: [list(b) for b in make_dataloaders(bundle, seed=seed, batch='day')['train'].batch_sampler]
    assert order(3) == order(3) and order(3) != order(4)
    unshuffled = list(DayBatchSampler(sample_days(bundle, 'val'), shuffle=False))
    assert [b[0] for b in unshuffled] == sorted(b[0] for b in unshuffled) or len(unshuffled) < 2


def test_day_loaders_carry_day_ids_and_keep_test_in_order(bundle):
    loaders = make_dataloaders(bundle, seed=0, batch='day', day_ids=True)
    days = sample_days(bundle, 'train')
    for x, y in loaders['train']:
        assert y.shape[1] == bundle.train.targets.shape[1] + 1
        assert len(torch.unique(y[:, -1])) == 1 and len(x) == (days == int(y[0, -1])).sum()
    test = loaders['test']
    ends = np.concatenate([bundle.test.ends.numpy()])
    ys = torch.cat([y for _, y in test]).numpy()
    np.testing.assert_array_equal(ys, bundle.test.targets.numpy()[ends])   # windows, in sample order
    with pytest.raises(ValueError, match='batch='):
        make_dataloaders(bundle, batch='days')
    with pytest.raises(ValueError, match='day_ids'):
        make_dataloaders(bundle, day_ids=True)


def test_ic_loss_matches_numpy_and_has_a_gradient():
    assert 'ic' in LOSSES
    rng = np.random.default_rng(0)
    day = np.repeat([0, 5, 2, 8], [7, 5, 1, 9]).astype(np.float32)
    target = rng.normal(size=len(day)).astype(np.float32)
    pred = torch.tensor(0.5 * target[:, None] + rng.normal(size=(len(day), 1)).astype(np.float32),
                        requires_grad=True)
    loss = make_loss('ic', 'regression')(pred, torch.tensor(np.c_[target, day]))
    p = pred.detach().numpy()[:, 0]
    want = -np.mean([np.corrcoef(p[day == d], target[day == d])[0, 1] for d in (0, 5, 8)])   # day 2: one sample
    assert loss.item() == pytest.approx(want, abs=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert pred.grad[day == 2].abs().sum() == 0
    # a whole batch of one-sample days: nothing to judge, zero, still differentiable
    single = make_loss('ic', 'regression')(pred[:3], torch.tensor(np.c_[target[:3], [1, 2, 3]], dtype=torch.float32))
    assert single.item() == 0 and single.requires_grad
    with pytest.raises(ValueError, match='day id'):
        make_loss('ic', 'regression')(pred, torch.tensor(target[:, None]))
