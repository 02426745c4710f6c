#!/usr/bin/env python
"""Speed of the signal analysis and of the cross-sectional processors, each against a naive pandas reference.

    python bench/bench_signal.py [--stocks 300] [--days 900] [--proc-days 3000] [--features 158] [--ref-features 16]

Signal analysis: a synthetic universe of `--stocks` x `--days` (a score that predicts the next return weakly,
2% of scores missing, random-walk closes for the three baseline factors). `signal_analysis` of the score alone
and with the baselines, against a `groupby(day).apply` that computes each day's Pearson and Spearman IC with
`Series.corr` and its quantile means with `pd.qcut`; the daily ICs of both must agree.

Processors: `cs_zscore`, `cs_rank`, `cs_fillna` on `--stocks` x `--proc-days` x `--features` float32 values
(rows shuffled, 1% missing, some ties); pandas' grouped equivalents run on `--ref-features` columns (all of
them take minutes) and are scaled to the full width (`*_pandas_s_scaled`); both must agree on those columns.
Prints one JSON object.
"""
import argparse, json, time

import numpy as np, pandas as pd

from quantnb.data.processors import cs_fillna, cs_rank, cs_zscore
from quantnb.train.signal import baseline_factors, forward_returns, signal_analysis


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def synthetic_signal(stocks: int, days: int, seed: int = 0):
    "Closes, next-day returns and a weakly predictive score, indexed (trade_date, instrument)."
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range('2018-01-02', periods=days + 1)
    index = pd.MultiIndex.from_product([dates, [f'{600000 + i:06d}.SH' for i in range(stocks)]],
                                       names=['trade_date', 'instrument'])
    score = rng.normal(size=(days + 1, stocks))
    daily = 0.002 * score + rng.normal(0, 0.02, score.shape)          # day t's score predicts day t+1's move
    close = 10 * np.exp(np.cumsum(np.vstack([np.zeros((1, stocks)), daily[:-1]]), axis=0))
    score[rng.random(score.shape) < 0.02] = np.nan
    close = pd.Series(close.reshape(-1), index, name='close')
    return close, forward_returns(close), pd.Series(score.reshape(-1), index, name='model')


def naive_analysis(scores: pd.Series, returns: pd.Series, quantiles: int = 5) -> pd.DataFrame:
    "Daily IC, rank IC and quantile means the obvious way: one pandas group per day."
    df = pd.concat([scores.rename('s'), returns.rename('r')], axis=1).dropna()

    def one_day(g):
        out = {'ic': g.s.corr(g.r), 'rank_ic': g.s.corr(g.r, method='spearman')}
        groups = pd.qcut(g.s.rank(method='first'), quantiles, labels=False)
        out |= {f'q{k + 1}': v for k, v in g.r.groupby(groups).mean().items()}
        return pd.Series(out)
    daily = df.groupby(level='trade_date').apply(one_day)
    wide = scores.unstack()
    daily['autocorr'] = wide.rank(axis=1).corrwith(wide.shift(1).rank(axis=1), axis=1)
    return daily


def bench_signal(stocks: int, days: int) -> dict:
    close, returns, scores = synthetic_signal(stocks, days)
    factors, factors_s = _timed(baseline_factors, close)
    report, model_s = _timed(signal_analysis, scores, returns)
    _, with_baselines_s = _timed(signal_analysis, scores, returns, baselines=factors)
    naive, naive_s = _timed(naive_analysis, scores, returns)
    ours = report.daily.loc['model'].reindex(naive.index)
    m = report.summary['signals']['model']
    return {'stocks': stocks, 'days': days, 'signal_analysis_s': round(model_s, 4),
            'with_3_baselines_s': round(with_baselines_s, 4), 'baseline_factors_s': round(factors_s, 4),
            'naive_groupby_s': round(naive_s, 3), 'speedup': round(naive_s / model_s, 1),
            'max_ic_diff': float((ours.ic - naive.ic).abs().max()),
            'max_rank_ic_diff': float((ours.rank_ic - naive.rank_ic).abs().max()),
            'rank_ic_mean': round(m['rank_ic_mean'], 4), 'rank_ic_t_nw': round(m['rank_ic_t_nw'], 2),
            'nw_lag': m['nw_lag'], 'monotonicity': m['monotonicity']}


def bench_processors(stocks: int, days: int, features: int, ref_features: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(stocks * days, features)).astype(np.float32)
    x[:, ::10] = np.round(x[:, ::10])                       # every tenth feature has many ties
    x[rng.random(x.shape) < 0.01] = np.nan
    day = rng.permutation(np.repeat(np.arange(days), stocks))
    out = {'stocks': stocks, 'days': days, 'features': features, 'values': int(x.size)}
    ref = pd.DataFrame(x[:, :ref_features].astype(np.float64))
    grouped = ref.groupby(day)
    count = ref.notna().groupby(day).transform('sum')
    references = {
        'cs_zscore': lambda: (ref - grouped.transform('mean')) / grouped.transform('std', ddof=0),
        'cs_rank': lambda: (grouped.rank() - 1) / (count - 1) - 0.5,
        'cs_fillna': lambda: ref.fillna(grouped.transform('median'))}
    for name, fn in [('cs_zscore', cs_zscore), ('cs_rank', cs_rank), ('cs_fillna', cs_fillna)]:
        result, seconds = _timed(fn, x, day)
        expected, ref_s = _timed(references[name])
        diff = np.abs(result[:, :ref_features] - expected.to_numpy())
        out |= {f'{name}_s': round(seconds, 3), f'{name}_pandas_s_scaled': round(ref_s * features / ref_features, 2),
                f'{name}_speedup': round(ref_s * features / ref_features / seconds, 1),
                f'{name}_max_diff': float(np.nanmax(diff))}
        del result
    return out


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--stocks', type=int, default=300)
    parser.add_argument('--days', type=int, default=900)
    parser.add_argument('--proc-days', type=int, default=3000)
    parser.add_argument('--features', type=int, default=158)
    parser.add_argument('--ref-features', type=int, default=16)
    a = parser.parse_args()
    print(json.dumps({'signal': bench_signal(a.stocks, a.days),
                      'processors': bench_processors(a.stocks, a.proc_days, a.features, a.ref_features)}))
