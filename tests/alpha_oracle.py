"""Qlib's Alpha158 and Alpha360, one stock at a time, written the obvious way with pandas.

Each line is the Qlib expression (qlib/contrib/data/loader.py) spelled with pandas rolling windows: the test oracle
for `quantnb.data.alpha` and the naive reference of bench/bench_alpha.py. Differences from Qlib itself, the same as
quantnb.data.alpha's: a rolling window is NaN until it is full (Qlib uses min_periods=1), a comparison with an undefined
value is undefined, and volume is Qlib's adjusted volume (raw volume / adj_factor).
"""
import numpy as np
import pandas as pd

WINDOWS = (5, 10, 20, 30, 60)
FAMILIES = ('ROC', 'MA', 'STD', 'BETA', 'RSQR', 'RESI', 'MAX', 'MIN', 'QTLU', 'QTLD', 'RANK', 'RSV', 'IMAX', 'IMIN',
            'IMXD', 'CORR', 'CORD', 'CNTP', 'CNTN', 'CNTD', 'SUMP', 'SUMN', 'SUMD', 'VMA', 'VSTD', 'WVMA', 'VSUMP',
            'VSUMN', 'VSUMD')


def fields(df: pd.DataFrame):
    "open, high, low, close, adjusted volume, vwap of one stock's bars."
    adj = df['adj_factor'] if 'adj_factor' in df else 1.0
    volume = df['volume'] / adj
    return df['open'], df['high'], df['low'], df['close'], volume, df['amount'] / volume


def _fit(y: np.ndarray):
    "Least squares of y on 1..n: slope, R², residual of the last point."
    t = np.arange(1, len(y) + 1)
    slope, intercept = np.polyfit(t, y, 1)
    return slope, np.corrcoef(t, y)[0, 1] ** 2, y[-1] - (intercept + slope * len(y))


def rolling_family(df: pd.DataFrame, family: str, d: int) -> pd.Series:
    "One Alpha158 rolling feature, e.g. ('CORD', 20)."
    o, h, l, c, v, vwap = fields(df)
    c1, v1 = c.shift(1), v.shift(1)
    R = lambda x: x.rolling(d, min_periods=d)
    lv, ret, lvr = np.log(v + 1), c / c1, np.log(v / v1 + 1)
    known = c.notna() & c1.notna()
    up, down = (c > c1).astype(float).where(known), (c < c1).astype(float).where(known)
    gain, loss, move = np.maximum(c - c1, 0), np.maximum(c1 - c, 0), (c - c1).abs()
    vgain, vloss, vmove = np.maximum(v - v1, 0), np.maximum(v1 - v, 0), (v - v1).abs()
    w = (c / c1 - 1).abs() * v

    def corr(x, y):
        r = R(x).corr(y)
        return r.mask((R(x).std() <= 2e-5) | (R(y).std() <= 2e-5))

    def idx(x, which):
        return R(x).apply(lambda a: (a.argmax() if which == 'max' else a.argmin()) + 1, raw=True)

    if family == 'ROC': return c.shift(d) / c
    if family == 'MA': return R(c).mean() / c
    if family == 'STD': return R(c).std() / c
    if family == 'BETA': return R(c).apply(lambda y: _fit(y)[0], raw=True) / c
    if family == 'RSQR': return R(c).apply(lambda y: _fit(y)[1], raw=True).mask(R(c).std() <= 2e-5)
    if family == 'RESI': return R(c).apply(lambda y: _fit(y)[2], raw=True) / c
    if family == 'MAX': return R(h).max() / c
    if family == 'MIN': return R(l).min() / c
    if family == 'QTLU': return R(c).quantile(0.8) / c
    if family == 'QTLD': return R(c).quantile(0.2) / c
    if family == 'RANK': return R(c).rank(pct=True)
    if family == 'RSV': return (c - R(l).min()) / (R(h).max() - R(l).min() + 1e-12)
    if family == 'IMAX': return idx(h, 'max') / d
    if family == 'IMIN': return idx(l, 'min') / d
    if family == 'IMXD': return (idx(h, 'max') - idx(l, 'min')) / d
    if family == 'CORR': return corr(c, lv)
    if family == 'CORD': return corr(ret, lvr)
    if family == 'CNTP': return R(up).mean()
    if family == 'CNTN': return R(down).mean()
    if family == 'CNTD': return R(up).mean() - R(down).mean()
    if family == 'SUMP': return R(gain).sum() / (R(move).sum() + 1e-12)
    if family == 'SUMN': return R(loss).sum() / (R(move).sum() + 1e-12)
    if family == 'SUMD': return (R(gain).sum() - R(loss).sum()) / (R(move).sum() + 1e-12)
    if family == 'VMA': return R(v).mean() / (v + 1e-12)
    if family == 'VSTD': return R(v).std() / (v + 1e-12)
    if family == 'WVMA': return R(w).std() / (R(w).mean() + 1e-12)
    if family == 'VSUMP': return R(vgain).sum() / (R(vmove).sum() + 1e-12)
    if family == 'VSUMN': return R(vloss).sum() / (R(vmove).sum() + 1e-12)
    if family == 'VSUMD': return (R(vgain).sum() - R(vloss).sum()) / (R(vmove).sum() + 1e-12)
    raise KeyError(family)


def candle(df: pd.DataFrame) -> pd.DataFrame:
    "The nine KBAR features and the four price ratios."
    o, h, l, c, v, vwap = fields(df)
    rng = h - l + 1e-12
    return pd.DataFrame({
        'KMID': (c - o) / o, 'KLEN': (h - l) / o, 'KMID2': (c - o) / rng,
        'KUP': (h - np.maximum(o, c)) / o, 'KUP2': (h - np.maximum(o, c)) / rng,
        'KLOW': (np.minimum(o, c) - l) / o, 'KLOW2': (np.minimum(o, c) - l) / rng,
        'KSFT': (2 * c - h - l) / o, 'KSFT2': (2 * c - h - l) / rng,
        'OPEN0': o / c, 'HIGH0': h / c, 'LOW0': l / c, 'VWAP0': vwap / c}, index=df.index)


def alpha158(df: pd.DataFrame) -> pd.DataFrame:
    "All 158 for one stock, in Qlib's order."
    parts = {f'{f}{d}': rolling_family(df, f, d) for f in FAMILIES for d in WINDOWS}
    return pd.concat([candle(df), pd.DataFrame(parts, index=df.index)], axis=1)


def alpha360(df: pd.DataFrame) -> pd.DataFrame:
    "All 360 for one stock: Ref(field, d)/close, Ref(volume, d)/(volume+1e-12), d = 59..0."
    o, h, l, c, v, vwap = fields(df)
    out = {}
    for name, x in (('CLOSE', c), ('OPEN', o), ('HIGH', h), ('LOW', l), ('VWAP', vwap)):
        for d in range(59, -1, -1): out[f'{name}{d}'] = x.shift(d) / c
    for d in range(59, -1, -1): out[f'VOLUME{d}'] = v.shift(d) / (v + 1e-12)
    return pd.DataFrame(out, index=df.index)
