#!/usr/bin/env python
"""Peak memory of importing one large plain CSV of daily bars, in a fresh process per measurement.

    python bench/bench_import.py [--rows 800000] [--package-root DIR] [--url sqlite:///...]

Writes a synthetic plain CSV (`--rows` bars of 6-digit symbols, ~75 bytes a line), then imports it
into a fresh SQLite file in a child process that reports its own peak resident memory
(`ru_maxrss`) before and after the import. `--package-root` runs the child against another
checkout of quantnb (say an older commit exported with `git archive`), so two versions can be
compared on the same file. Prints one JSON object.
"""
import argparse, json, os, subprocess, sys, tempfile, textwrap
from pathlib import Path

import numpy as np, pandas as pd

CHILD = textwrap.dedent('''
    import json, resource, sys, time
    import pandas, sqlalchemy, quantnb.data.importer as importer
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    before = peak()
    start = time.perf_counter()
    result = importer.import_file(sys.argv[1], sys.argv[2])
    print(json.dumps(dict(rows=result.rows, new_rows=result.new_rows, seconds=round(time.perf_counter() - start, 1),
                          rss_before_mb=round(before, 1), peak_rss_mb=round(peak(), 1))))
''')


def synthetic_csv(path: Path, rows: int, seed: int = 0) -> Path:
    "`rows` plausible bars: 2,000 symbols x as many days as needed, written in chunks."
    rng = np.random.default_rng(seed)
    n_symbols = 2000
    days = pd.bdate_range('2000-01-03', periods=-(-rows // n_symbols))
    with open(path, 'w') as f:
        f.write('symbol,trade_date,open,high,low,close,volume,amount,pre_close\n')
        for i in range(0, n_symbols):
            n = min(len(days), rows - i * len(days))
            if n <= 0: break
            close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
            pre = np.r_[close[0], close[:-1]]
            open_ = pre * (1 + rng.normal(0, 0.005, n))
            high, low = np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99
            volume = rng.integers(1000, 10**7, n)
            frame = pd.DataFrame({'symbol': f'{600000 + i:06d}', 'trade_date': days[:n].strftime('%Y-%m-%d'),
                                  'open': open_.round(2), 'high': high.round(2), 'low': low.round(2),
                                  'close': close.round(2), 'volume': volume, 'amount': (volume * close).round(0),
                                  'pre_close': pre.round(2)})
            frame['high'] = frame[['open', 'high', 'close']].max(axis=1)   # rounding must not break high >= open, close
            frame['low'] = frame[['open', 'low', 'close']].min(axis=1)
            frame.to_csv(f, header=False, index=False)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=800_000)
    ap.add_argument('--package-root', default=str(Path(__file__).resolve().parents[1]))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = synthetic_csv(Path(tmp) / 'bars.csv', args.rows)
        url = f'sqlite:///{tmp}/bench.sqlite'
        env = {**os.environ, 'PYTHONPATH': args.package_root, 'QUANTNB_HOME': tmp}
        out = subprocess.run([sys.executable, '-c', CHILD, str(csv), url], capture_output=True, text=True, env=env,
                             cwd=tmp)   # not the checkout: `python -c` puts the working directory first on sys.path
        if out.returncode: sys.exit(out.stderr)
        where = subprocess.run([sys.executable, '-c', 'import quantnb; print(quantnb.__file__)'], capture_output=True,
                               text=True, env=env, cwd=tmp).stdout.strip()
        result = json.loads(out.stdout)
        size_mb = csv.stat().st_size / 2**20
        grown = result['peak_rss_mb'] - result['rss_before_mb']
        print(json.dumps(dict(package=where, file_mb=round(size_mb, 1), **result,
                              growth_mb=round(grown, 1), growth_per_file_mb=round(grown / size_mb, 2)), indent=1))


if __name__ == '__main__':
    main()
