"""Signal analysis: daily IC and rank IC, Newey-West, quantiles, autocorrelation, baselines, saving and plots."""
import json, math

import numpy as np, pandas as pd
import pytest

from quantnb.train import signal as sig
from quantnb.train.signal import (baseline_factors, daily_ic, forward_returns, long_series, newey_west_lag,
                                  newey_west_t, panel_autocorr, plot_signal_analysis, save_signal_analysis,
                                  signal_analysis, signal_table)


def _universe(days=300, stocks=60, noise=0.0, seed=0, missing=0.0):
    "Scores and returns indexed (trade_date, instrument); the return is an increasing function of the score."
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range('2020-01-01', periods=days)
    index = pd.MultiIndex.from_product([dates, [f'{i:06d}.SZ' for i in range(stocks)]],
                                       names=['trade_date', 'instrument'])
    score = rng.normal(size=len(index))
    ret = 0.01 * np.tanh(score) + 0.002 * score ** 3 + noise * rng.normal(size=len(index))
    score[rng.random(len(index)) < missing] = np.nan
    return pd.Series(score, index, name='model'), pd.Series(ret, index, name='ret')


def test_return_increasing_in_score_gives_rank_ic_near_one_and_monotone_quantiles():
    scores, returns = _universe(noise=0.0005)
    m = signal_analysis(scores, returns).summary['signals']['model']
    assert m['rank_ic_mean'] > 0.95 and m['ic_mean'] > 0.8
    assert m['rank_ic_positive'] == 1.0
    assert m['monotonicity'] == pytest.approx(1.0)
    assert np.all(np.diff(m['quantile_mean_return']) > 0)
    assert m['long_short_sharpe'] > 10 and m['rank_ic_t_nw'] > 50


def test_shuffled_scores_give_ic_near_zero_and_small_newey_west_t():
    scores, returns = _universe(noise=0.0005)
    shuffled = pd.Series(np.random.default_rng(1).permutation(scores.to_numpy()), scores.index, name='shuffled')
    m = signal_analysis(shuffled, returns).summary['signals']['shuffled']
    assert abs(m['ic_mean']) < 0.02 and abs(m['rank_ic_mean']) < 0.02
    assert abs(m['ic_t_nw']) < 3 and abs(m['rank_ic_t_nw']) < 3
    assert 0.35 < m['rank_ic_positive'] < 0.65


def test_daily_ic_against_scipy_and_numpy_per_day():
    stats = pytest.importorskip('scipy.stats')
    scores, returns = _universe(days=20, stocks=15, noise=0.01, missing=0.15, seed=3)
    scores = scores.round(1)                                    # ties in the scores
    returns = returns.where(np.random.default_rng(4).random(len(returns)) > 0.1)
    got = daily_ic(scores, returns)
    for day, g in pd.concat([scores, returns], axis=1).groupby(level='trade_date'):
        g = g.dropna()
        assert got.loc[day, 'members'] == len(g)
        assert got.loc[day, 'coverage'] == scores.xs(day, level='trade_date').notna().sum()
        assert got.loc[day, 'ic'] == pytest.approx(np.corrcoef(g.model, g.ret)[0, 1], abs=1e-12)
        assert got.loc[day, 'rank_ic'] == pytest.approx(stats.spearmanr(g.model, g.ret).statistic, abs=1e-12)


def test_small_case_by_hand():
    dates = pd.to_datetime(['2021-01-04'] * 5 + ['2021-01-05'] * 5)
    index = pd.MultiIndex.from_arrays([dates, list('abcde') * 2], names=['trade_date', 'instrument'])
    scores = pd.Series([1, 2, 3, 4, 5, 5, 4, 3, 2, 1], index, dtype=float)
    returns = pd.Series([0.01, 0.03, 0.02, 0.05, 0.04, 0.0, 0.0, 0.0, 0.0, 0.0], index)
    got = daily_ic(scores, returns)
    assert got['rank_ic'].iloc[0] == pytest.approx(0.8)       # 1 - 6 * (1 + 1 + 1 + 1) / (5 * 24)
    assert np.isnan(got['ic'].iloc[1])                         # all returns equal: no correlation
    x, r = np.arange(1, 6.0), returns.iloc[:5].to_numpy()
    dx, dr = x - x.mean(), r - r.mean()
    expected = (dx * dr).sum() / math.sqrt((dx ** 2).sum() * (dr ** 2).sum())
    assert got['ic'].iloc[0] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(daily_ic(scores, returns, min_members=6)['ic']).all()


def test_quantile_returns_by_hand():
    x = np.array([[6., 5, 4, 3, 2, 1, np.nan], [1, 1, 1, 2, 2, 3, 3]])
    y = np.array([[60., 50, 40, 30, 20, 10, 99], [1, 2, 3, 4, 5, 6, np.nan]])
    got = sig.panel_quantile_returns(x, y, quantiles=3)
    # day 1: 6 members, ranks 0..5 -> groups 0,0,1,1,2,2 by score; day 2: ties share a group
    # (ranks 1,1,1 -> group 0; 3.5,3.5 -> group 1; 5 (the lone 3 with a return) -> group 2)
    np.testing.assert_allclose(got, [[15, 35, 55], [2, 4.5, 6]])
    assert np.isnan(sig.panel_quantile_returns(x, y, quantiles=3, min_members=7)).all()


def test_quantiles_long_short_and_annualisation_follow_the_daily_series():
    scores, returns = _universe(noise=0.01)
    report = signal_analysis(scores, returns, quantiles=4, periods_per_year=250)
    daily, m = report.daily.loc['model'], report.summary['signals']['model']
    np.testing.assert_allclose(daily['long_short'], daily['q4'] - daily['q1'])
    np.testing.assert_allclose(m['quantile_mean_return'], daily[['q1', 'q2', 'q3', 'q4']].mean())
    assert m['long_short_annual'] == pytest.approx(daily['long_short'].mean() * 250)
    ls = daily['long_short']
    assert m['long_short_sharpe'] == pytest.approx(ls.mean() / ls.std() * math.sqrt(250))
    assert m['icir'] == pytest.approx(daily['ic'].mean() / daily['ic'].std())


def _newey_west_direct(x, lag):
    "The textbook formula, loop by loop."
    x = np.asarray(x, float)
    T, mu = len(x), float(np.mean(x))
    gamma = [sum((x[t] - mu) * (x[t - j] - mu) for t in range(j, T)) / T for j in range(lag + 1)]
    var = gamma[0] + 2 * sum((1 - j / (lag + 1)) * gamma[j] for j in range(1, lag + 1))
    return mu / math.sqrt(var / T)


@pytest.mark.parametrize('lag', [None, 0, 1, 3, 10])
def test_newey_west_against_the_direct_formula(lag):
    rng = np.random.default_rng(7)
    x = np.convolve(rng.normal(0.02, 0.1, 260), np.ones(5) / 5, 'valid')      # autocorrelated, 256 days
    got = newey_west_t(x, lag)
    used = newey_west_lag(len(x)) if lag is None else lag
    assert got['lag'] == used and got['days'] == len(x)
    assert got['lag_rule'] == ('floor(4 (T/100)^(2/9))' if lag is None else 'given')
    assert got['t'] == pytest.approx(_newey_west_direct(x, used), rel=1e-12)
    assert newey_west_t(np.r_[x, np.nan], lag)['t'] == pytest.approx(got['t'])  # days without an IC are dropped


def test_newey_west_lag_rule_and_edges():
    assert [newey_west_lag(t) for t in (1, 50, 100, 500, 900, 2500)] == \
        [int(4 * (t / 100) ** (2 / 9)) for t in (1, 50, 100, 500, 900, 2500)]
    assert newey_west_lag(900) == 6
    assert math.isnan(newey_west_t([0.1])['t'])
    assert newey_west_t([0.1, 0.2, 0.3], lag=10)['lag'] == 2         # never more than T - 1
    x = np.random.default_rng(0).normal(0.01, 0.05, 400)
    slow = np.convolve(np.random.default_rng(1).normal(0.01, 0.05, 419), np.ones(20) / 20, 'valid')
    assert abs(newey_west_t(slow)['t']) < abs(newey_west_t(slow, lag=0)['t'])   # autocorrelation shrinks t
    assert newey_west_t(x, lag=0)['t'] == pytest.approx(x.mean() / x.std() * math.sqrt(400))


def test_autocorrelation_and_coverage():
    scores, returns = _universe(days=50, stocks=30, missing=0.1)
    steady = scores.groupby(level='instrument').transform('first').where(scores.notna())   # same order every day
    m = signal_analysis(steady, returns).summary['signals']['model']
    assert m['autocorr_mean'] == pytest.approx(1.0)
    m = signal_analysis(scores, returns).summary['signals']['model']
    assert abs(m['autocorr_mean']) < 0.1                      # fresh noise each day
    counts = scores.notna().groupby(level='trade_date').sum()
    assert m['coverage_mean'] == pytest.approx(counts.mean()) and m['coverage_min'] == counts.min()
    days = pd.DatetimeIndex(scores.index.get_level_values('trade_date').unique())
    auto = panel_autocorr(scores, days)
    a, b = scores.xs(days[7], level='trade_date'), scores.xs(days[6], level='trade_date')
    both = a.notna() & b.notna()
    assert auto[7] == pytest.approx(a[both].rank().corr(b[both].rank()), abs=1e-12)


def _closes(days=80, stocks=6, seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range('2021-01-01', periods=days)
    wide = pd.DataFrame(10 * np.exp(np.cumsum(rng.normal(0, 0.02, (days, stocks)), axis=0)), dates,
                        pd.Index([f'{600000 + i}.SH' for i in range(stocks)], name='instrument'))
    wide.iloc[30:35, 2] = np.nan                                      # a suspension
    wide.iloc[:40, 5] = np.nan                                        # listed later
    return wide


def test_baseline_factors_by_hand_over_each_stocks_own_bars():
    wide = _closes()
    f = baseline_factors(wide, window=20, skip=5)
    for inst in wide.columns:
        c = wide[inst].dropna()
        got = f.xs(inst, level='instrument')
        expected_rev = -(c / c.shift(20) - 1)
        expected_mom = c.shift(5) / c.shift(25) - 1
        expected_vol = -c.pct_change().rolling(20).std()
        pd.testing.assert_series_equal(got['reversal_20'], expected_rev, check_names=False, check_freq=False)
        pd.testing.assert_series_equal(got['momentum_20'], expected_mom, check_names=False, check_freq=False)
        pd.testing.assert_series_equal(got['volatility_20'], expected_vol, check_names=False, check_freq=False,
                                       atol=1e-12)
    long = long_series(wide).swaplevel().sort_index()                 # (instrument, trade_date) order
    pd.testing.assert_frame_equal(baseline_factors(long), f)


def test_forward_returns_need_the_next_market_day():
    wide = _closes()
    r = forward_returns(wide)
    close = long_series(wide)
    assert r.index.equals(close.index)
    s = wide.iloc[:, 0]
    assert r.xs(s.index[3], level='trade_date').iloc[0] == pytest.approx(s.iloc[4] / s.iloc[3] - 1)
    assert np.isnan(r.xs((wide.index[29], '600002.SH')))              # suspended on the next day
    assert r.xs(wide.index[-1], level='trade_date').isna().all()
    two = forward_returns(wide, horizon_days=2)
    assert two.xs((wide.index[3], '600000.SH')) == pytest.approx(s.iloc[5] / s.iloc[3] - 1)
    with pytest.raises(ValueError, match='horizon_days'): forward_returns(wide, 0)


def test_baselines_are_judged_on_the_models_rows():
    scores, returns = _universe(days=60, stocks=20, noise=0.01)
    scores = scores[scores.index.get_level_values('instrument') < '000010.SZ']     # the model scores half the stocks
    extra = pd.DataFrame({'other': np.random.default_rng(0).normal(size=len(returns))}, index=returns.index)
    report = signal_analysis(scores, returns, baselines=extra)
    assert list(report.predictions.columns) == ['model', 'other', 'return']
    assert report.predictions.index.equals(long_series(scores).index)
    assert report.summary['signals']['other']['coverage_mean'] == pytest.approx(10)
    table = signal_table(report)
    assert list(table.index) == ['model', 'other'] and table.loc['model', 'rank_ic_mean'] > 0.5
    with pytest.raises(ValueError, match='same name as a score'):
        signal_analysis(scores, returns, baselines=scores.to_frame())


def test_inputs_in_either_index_order_and_bad_input():
    scores, returns = _universe(days=30, stocks=10, noise=0.01)
    a = signal_analysis(scores, returns).summary
    b = signal_analysis(scores.swaplevel().sort_index(), returns.swaplevel()).summary
    assert json.dumps(a) == json.dumps(b)
    with pytest.raises(ValueError, match='more than one value for 000001.SZ'):
        signal_analysis(pd.concat([scores, scores.iloc[[1]]]), returns)
    with pytest.raises(ValueError, match=r'indexed \(trade_date, instrument\)'):
        signal_analysis(scores.reset_index(drop=True), returns)
    with pytest.raises(ValueError, match='quantiles must be >= 2'): signal_analysis(scores, returns, quantiles=1)


def test_save_writes_json_and_parquet_atomically(tmp_path):
    scores, returns = _universe(days=40, stocks=12, noise=0.01)
    report = signal_analysis(scores, returns)
    paths = save_signal_analysis(tmp_path, report)
    assert paths['summary'] == tmp_path/'results'/'signal_analysis.json'
    summary = json.loads(paths['summary'].read_text(), parse_constant=lambda c: pytest.fail(f'{c} in JSON'))
    assert summary['signals']['model']['nw_lag'] == report.summary['signals']['model']['nw_lag']
    daily = pd.read_parquet(tmp_path/'results'/'signal_daily.parquet')
    assert list(daily.columns[:2]) == ['signal', 'trade_date']
    np.testing.assert_allclose(daily.set_index(['signal', 'trade_date']).to_numpy(float), report.daily.to_numpy(float))
    preds = pd.read_parquet(tmp_path/'results'/'signal_predictions.parquet').set_index(['trade_date', 'instrument'])
    pd.testing.assert_frame_equal(preds, report.predictions, check_freq=False)
    assert not [p for p in tmp_path.rglob('*') if p.name.endswith('.tmp')]
    other = save_signal_analysis(tmp_path/'elsewhere'/'analysis.json', report)
    assert other['daily'] == tmp_path/'elsewhere'/'signal_daily.parquet'


def test_a_failed_write_leaves_the_previous_files(tmp_path, monkeypatch):
    scores, returns = _universe(days=40, stocks=12, noise=0.01)
    report = signal_analysis(scores, returns)
    save_signal_analysis(tmp_path, report)
    before = (tmp_path/'results'/'signal_daily.parquet').read_bytes()

    def broken(self, *a, **k): raise OSError('disk full')
    monkeypatch.setattr(pd.DataFrame, 'to_parquet', broken)
    with pytest.raises(OSError, match='disk full'): save_signal_analysis(tmp_path, report)
    assert (tmp_path/'results'/'signal_daily.parquet').read_bytes() == before
    assert sorted(p.name for p in (tmp_path/'results').iterdir()) == \
        ['signal_analysis.json', 'signal_daily.parquet', 'signal_predictions.parquet']


def test_plots_saved_next_to_the_run(tmp_path):
    import matplotlib.pyplot as plt
    scores, returns = _universe(days=60, stocks=20, noise=0.01)
    figs = plot_signal_analysis(signal_analysis(scores, returns), tmp_path)
    assert sorted(figs) == ['ic', 'quantiles']
    for name in figs:
        data = (tmp_path/'plots'/f'{name}.png').read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000
        plt.close(figs[name])


def test_speed_300_stocks_900_days():
    import time
    scores, returns = _universe(days=900, stocks=300, noise=0.01)
    t = time.perf_counter()
    signal_analysis(scores, returns)
    assert time.perf_counter() - t < 2.0
