"""Cross-sectional processors: each day alone, against pandas, NaN and ties, the record, speed-relevant blocking."""
import numpy as np, pandas as pd
import pytest

from quantnb.data import processors
from quantnb.data.processors import (Processor, apply_processors, cs_fillna, cs_rank, cs_zscore, day_layout,
                                     from_panel, to_panel)

ALL = [cs_zscore, cs_rank, cs_fillna]


def _universe(seed=0, days=30, stocks=25, features=4, missing=0.1):
    "Rows of unequal days in shuffled order, some NaN and ties."
    rng = np.random.default_rng(seed)
    day = rng.permutation(np.concatenate([np.full(rng.integers(1, stocks), d) for d in range(days)]))
    x = rng.normal(size=(len(day), features))
    x[:, 1] = np.round(x[:, 1])                     # ties
    x[rng.random(x.shape) < missing] = np.nan
    return x, day


@pytest.mark.parametrize('fn', ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize('seed', range(5))
def test_a_day_never_sees_another_day(fn, seed):
    x, day = _universe(seed)
    rng = np.random.default_rng(100 + seed)
    target = int(day[0])
    before = fn(x, day)[day == target]
    other = day != target
    changed = x.copy()
    changed[other] = rng.normal(0, 100, size=(other.sum(), x.shape[1]))   # every other day rewritten
    changed[other & (rng.random(len(day)) < 0.3)] = np.nan
    np.testing.assert_array_equal(fn(changed, day)[day == target], before)
    assert not np.allclose(fn(changed, day)[other], fn(x, day)[other], equal_nan=True)


@pytest.mark.parametrize('fn', ALL, ids=lambda f: f.__name__)
def test_rows_of_a_day_need_not_be_together(fn):
    x, day = _universe(1)
    order = np.random.default_rng(1).permutation(len(day))
    # a day's sums run in another order: equal up to rounding
    np.testing.assert_allclose(fn(x[order], day[order]), fn(x, day)[order], rtol=0, atol=1e-12)


def _pandas(x, day):
    df = pd.DataFrame(x)
    return df, df.groupby(day)


def test_zscore_matches_pandas_per_day():
    x, day = _universe(2)
    df, g = _pandas(x, day)
    expected = (df - g.transform('mean')) / g.transform('std', ddof=0)
    got = cs_zscore(x, day)
    ok = np.isfinite(expected.to_numpy())
    np.testing.assert_allclose(got[ok], expected.to_numpy()[ok], atol=1e-12)
    assert np.array_equal(np.isnan(got), np.isnan(x))


def test_float32_zscore_is_as_precise_as_its_input():
    x, day = _universe(9)
    x = (25 + 2 * x).astype(np.float32)                      # a level far from zero, like a log market cap
    z32 = cs_zscore(x, day)
    assert z32.dtype == np.float32
    np.testing.assert_allclose(z32, cs_zscore(x.astype(np.float64), day), atol=1e-5)
    assert (cs_zscore(np.full(4, 0.1, np.float32), np.zeros(4, int)) == 0).all()


def test_zscore_constant_day_lone_member_and_clip():
    x = np.array([0.1, 0.1, 0.1, 7.0, 1.0, 2.0, 30.0, np.nan])
    day = np.array([0, 0, 0, 1, 2, 2, 2, 2])
    z = cs_zscore(x, day)
    np.testing.assert_array_equal(z[:4], 0)          # all equal (up to rounding of the mean), one member
    assert np.isnan(z[-1])
    clipped = cs_zscore(x, day, clip=0.5)
    assert np.nanmax(np.abs(clipped)) == 0.5
    with pytest.raises(ValueError, match='clip must be > 0'): cs_zscore(x, day, clip=0)


def test_rank_matches_pandas_average_rank_with_ties_and_nan():
    x, day = _universe(3)
    df, g = _pandas(x, day)
    count = df.notna().groupby(day).transform('sum')
    expected = ((g.rank() - 1) / (count - 1) - 0.5).where(count > 1, 0).where(df.notna())
    np.testing.assert_allclose(cs_rank(x, day), expected.to_numpy(), atol=1e-12)


def test_rank_by_hand():
    r = cs_rank(np.array([5., 1, 5, np.nan, 3, 9, 9]), np.array([0, 0, 0, 0, 0, 1, 1]))
    np.testing.assert_allclose(r, [2.5 / 3 - 0.5, -0.5, 2.5 / 3 - 0.5, np.nan, 1 / 3 - 0.5, 0, 0])
    r = cs_rank(np.array([[2., 4], [1, 3], [3, np.inf]]), np.zeros(3, int))   # inf counts as missing
    np.testing.assert_allclose(r, [[0, 0.5], [-0.5, -0.5], [0.5, np.nan]])


def test_fillna_median_of_the_day_only_where_missing():
    x, day = _universe(4, missing=0.3)
    df, g = _pandas(x, day)
    expected = df.fillna(g.transform('median'))
    np.testing.assert_allclose(cs_fillna(x, day), expected.to_numpy(), atol=1e-12)
    present = ~np.isnan(x)
    np.testing.assert_array_equal(cs_fillna(x, day)[present], x[present])


def test_fillna_even_count_empty_day_and_inf():
    x = np.array([4., 1, np.nan, 3, 2, np.nan, np.nan, np.inf])
    day = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(cs_fillna(x, day), [4, 1, 2.5, 3, 2, np.nan, np.nan, np.nan])


@pytest.mark.parametrize('fn', ALL, ids=lambda f: f.__name__)
def test_blocks_of_columns_give_the_same_result(fn, monkeypatch):
    x, day = _universe(5, features=7)
    whole = fn(x, day)
    monkeypatch.setattr(processors, 'PANEL_CELLS', 1)     # one column per block
    np.testing.assert_array_equal(fn(x, day), whole)


@pytest.mark.parametrize('fn', ALL, ids=lambda f: f.__name__)
def test_dtypes_shapes_and_frames(fn):
    x, day = _universe(6)
    got32 = fn(x.astype(np.float32), day)
    assert got32.dtype == np.float32 and got32.shape == x.shape
    assert fn(x[:, 0], day).shape == (len(day),)
    assert fn(np.zeros((0, 3), np.float32), np.zeros(0, int)).shape == (0, 3)
    dates = pd.bdate_range('2021-01-01', periods=30)[day]
    frame = pd.DataFrame(x, index=pd.MultiIndex.from_arrays([np.arange(len(day)).astype(str), dates],
                                                            names=['instrument', 'trade_date']))
    out = fn(frame)
    assert isinstance(out, pd.DataFrame) and out.index.equals(frame.index)
    np.testing.assert_array_equal(out.to_numpy(), fn(x, day))
    np.testing.assert_array_equal(fn(frame[0]).to_numpy(), fn(x[:, 0], day))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='needs its `day` ids'): cs_rank(np.ones(3))
    with pytest.raises(ValueError, match='3 rows of values but 2 day ids'): cs_rank(np.ones(3), np.array([0, 1]))
    with pytest.raises(ValueError, match='integer'): cs_rank(np.ones(2), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match='>= 0'): cs_rank(np.ones(2), np.array([-1, 0]))
    with pytest.raises(ValueError, match='numbers'): cs_rank(np.array(['a', 'b']), np.array([0, 0]))
    undated = pd.DataFrame({'a': [1.0]}, index=pd.MultiIndex.from_arrays([['x'], [1]]))
    with pytest.raises(ValueError, match='name it trade_date'): cs_rank(undated)


def test_panel_round_trip():
    x, day = _universe(7)
    lay = day_layout(day)
    np.testing.assert_array_equal(from_panel(to_panel(x, lay), lay), x)


def test_processor_record_round_trip_and_errors():
    steps = [Processor('cs_fillna'), Processor('cs_zscore', {'clip': 3.0}), Processor('cs_rank')]
    records = [p.to_dict() for p in steps]
    assert [Processor.from_dict(r) for r in records] == steps
    import json
    assert [Processor.from_dict(r) for r in json.loads(json.dumps(records))] == steps
    with pytest.raises(ValueError, match="unknown processor 'cs_nope'"): Processor('cs_nope')
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['window'\]"): Processor('cs_zscore', {'window': 2})
    with pytest.raises(ValueError, match='a processor record is'): Processor.from_dict({'name': 'cs_rank', 'x': 1})


def test_apply_processors_equals_steps_one_by_one():
    x, day = _universe(8)
    record = [{'name': 'cs_fillna', 'params': {}}, {'name': 'cs_zscore', 'params': {'clip': 2.0}}, 'cs_rank']
    by_hand = cs_rank(cs_zscore(cs_fillna(x, day), day, clip=2.0), day)
    np.testing.assert_array_equal(apply_processors(x, day, record), by_hand)
    np.testing.assert_array_equal(apply_processors(x, day, []), x)
