#!/usr/bin/env python
"""Build the bundled universe slice (quantnb/sample/universe/) from the shared 853-stock universe.

    python tools/make_universe_slice.py ../shared/data/universe

Forty stocks, 2019-01-01 .. 2021-12-31: the ten of the bundled sample, stocks that were ST for a while, stocks
delisted or listed within the period, ChiNext and STAR stocks, and evenly spaced others. Each vendor file keeps its
banner (the compiler's credit), its header and the rows of those three years, byte for byte, gzip-compressed with a
fixed timestamp so the output is reproducible. SOURCE.md travels with the data.
"""
import gzip, sys
from pathlib import Path

FIRST, LAST = '2019-01-01', '2021-12-31'
SAMPLE = 'sh600036 sh600276 sh600519 sh601318 sz000001 sz000002 sz000333 sz000858 sz002415 sz300750'.split()
CHOSEN = ('sh600078 sh600221 sz000422 sz002450 sh600485 sz300202 '   # ST for a while (600485, 002450 also delisted)
          'sh600068 sz000418 sz300104 '                                # delisted within the period
          'sh688008 sh688111 sh688981 sz300782 sh601816').split()      # listed within it (STAR, ChiNext, main)
N = 40

def gzip_bytes(data: bytes, dest: Path):
    with open(dest, 'wb') as raw, gzip.GzipFile(filename='', mode='wb', fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(data)

def rows_in_period(path: Path) -> tuple[str, str, list[str]]:
    banner, header, *rows = gzip.decompress(path.read_bytes()).decode('utf-8').split('\n')
    return banner, header, [r for r in rows if r and FIRST <= r.split(',')[2] <= LAST]

def main(src: Path, dest: Path):
    files = {f.name.split('.')[0]: f for f in sorted(src.glob('s[hz]*.csv.gz'))}
    active = [c for c in files if c not in SAMPLE + CHOSEN and rows_in_period(files[c])[2]]
    step = len(active) / (N - len(SAMPLE) - len(CHOSEN))
    picked = SAMPLE + CHOSEN + [active[int(i * step)] for i in range(N - len(SAMPLE) - len(CHOSEN))]
    dest.mkdir(parents=True, exist_ok=True)
    for code in sorted(picked):
        banner, header, kept = rows_in_period(files[code])
        gzip_bytes(('\n'.join([banner, header, *kept]) + '\n').encode('utf-8'), dest/f'{code}.csv.gz')
        print(f'{code}: {len(kept)} rows {kept[0].split(",")[2]}..{kept[-1].split(",")[2]}')
    (dest/'SOURCE.md').write_text(SOURCE.format(n=len(picked), codes=' '.join(sorted(picked))))

SOURCE = """# quantnb universe slice: {n} real A-share stocks, daily bars 2019-01-02 .. 2021-12-31

A small slice of a real A-share universe, for tests and notebooks about universes (point-in-time
membership, ST status, listings and delistings) that must run anywhere in seconds. Built by
`tools/make_universe_slice.py` from an 853-stock universe: every stock that was ever among the 300
largest A-shares by free-float market cap at a half-year rebalance, 2009 .. 2021.

- Stocks: {codes}.
- Source: trimmed copies (rows dated 2019-01-01 .. 2021-12-31, every kept line unchanged,
  gzip-compressed) of files from the public GitHub repository ganlei333/stockdata, commit
  e4c6e193f7d164a7fb380c7d3f2c367baa898b1f (2022-01-14). No licence file; the banner line of each
  file credits the compiler: "数据由邢不行整理" (data compiled by 邢不行). Research use only; keep
  this attribution with any copy.
- Format: as the bundled sample (`../SOURCE.md`): banner, Chinese header, one row per trading day
  with the stock's name on that day ("ST" / "*ST" mark special treatment), unadjusted prices, the
  exchange's previous close, volume, amount, free-float and total market cap. Suspended days are absent.
"""

if __name__ == '__main__':
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1]/'quantnb'/'sample'/'universe')
