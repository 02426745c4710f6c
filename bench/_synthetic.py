"""Synthetic daily bars for benchmarks: random walks with realistic OHLC, volume, amount, caps and dividends."""
import numpy as np, pandas as pd


def synthetic_universe(n_symbols: int = 300, n_days: int = 2500, seed: int = 0) -> pd.DataFrame:
    "A long frame (symbol, trade_date as YYYY-MM-DD text, OHLC, volume, amount, pre_close, caps), a dividend a year."
    rng = np.random.default_rng(seed)
    days = pd.bdate_range('2012-01-02', periods=n_days).strftime('%Y-%m-%d')
    frames = []
    for i in range(n_symbols):
        close = np.round(20 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, n_days))), 2)
        pre_close = np.r_[close[0], close[:-1]]
        pre_close = np.round(np.where(rng.random(n_days) < 1 / 250, pre_close * 0.98, pre_close), 2)
        spread = np.abs(rng.normal(0, 0.01, n_days)) * close
        high, low = np.round(close + spread, 2), np.round(close - spread, 2)
        open_ = np.round(np.clip(pre_close * (1 + rng.normal(0, 0.005, n_days)), low, high), 2)
        volume = rng.integers(100_000, 10_000_000, n_days).astype(float)
        float_shares = rng.uniform(1e8, 1e10)
        frames.append(pd.DataFrame({
            'symbol': f'{990000 + i:06d}', 'trade_date': days, 'open': open_, 'high': high, 'low': low, 'close': close,
            'volume': volume, 'amount': np.round(volume * close, 2), 'pre_close': pre_close,
            'float_market_cap': close * float_shares, 'total_market_cap': close * float_shares * 1.3}))
    return pd.concat(frames, ignore_index=True)


def as_panel(universe: pd.DataFrame) -> pd.DataFrame:
    "The synthetic frame indexed like `StockDataLoader.load_many` output: (symbol, trade_date), floats."
    df = universe.assign(trade_date=pd.to_datetime(universe.trade_date).astype('datetime64[ns]'))
    return df.set_index(['symbol', 'trade_date']).sort_index()
