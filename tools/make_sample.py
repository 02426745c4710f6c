#!/usr/bin/env python
"""Build the bundled sample (quantnb/sample/) from the real A-share files.

    python tools/make_sample.py ../shared/data/ashare

Keeps each vendor file's banner (the compiler's credit), header and the rows dated
2010-01-01 .. 2022-01-14, byte for byte, gzip-compressed with a fixed timestamp so the output is
reproducible. The stock list is cut to the sampled stocks. SOURCE.md travels with the data.
"""
import gzip, sys
from pathlib import Path

FIRST, LAST = '2010-01-01', '2022-01-14'

def gzip_bytes(data: bytes, dest: Path):
    with open(dest, 'wb') as raw, gzip.GzipFile(filename='', mode='wb', fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(data)

def main(src: Path, dest: Path):
    dest.mkdir(parents=True, exist_ok=True)
    codes = []
    for f in sorted(src.glob('s[hz]*.csv')):
        banner, header, *rows = f.read_bytes().decode('utf-8').split('\n')
        kept = [r for r in rows if r and FIRST <= r.split(',')[2] <= LAST]
        gzip_bytes(('\n'.join([banner, header, *kept]) + '\n').encode('utf-8'), dest/f'{f.name}.gz')
        codes.append(f.stem[2:])
        print(f'{f.name}: {len(kept)} rows {kept[0].split(",")[2]}..{kept[-1].split(",")[2]}')
    header, *rows = (src/'stock_basic.csv').read_bytes().decode('utf-8').split('\n')
    kept = [r for r in rows if r and r.split(',')[1] in codes]
    gzip_bytes(('\n'.join([header, *kept]) + '\n').encode('utf-8'), dest/'stock_basic.csv.gz')
    (dest/'SOURCE.md').write_text(SOURCE)
    print(f'stock_basic.csv: {len(kept)} rows')

SOURCE = """# quantnb sample data: ten real A-share stocks, daily bars 2010-01-04 .. 2022-01-14

Trimmed copies (rows dated 2010-01-01 .. 2022-01-14, every kept line unchanged, gzip-compressed)
of real daily K-line files, for research and teaching use.

- Daily bars `sh600036 sh600276 sh600519 sh601318 sz000001 sz000002 sz000333 sz000858 sz002415
  sz300750`: public GitHub repository ganlei333/stockdata, commit
  e4c6e193f7d164a7fb380c7d3f2c367baa898b1f (2022-01-14). No licence file; the banner line of each
  file credits the compiler: "数据由邢不行整理" (data compiled by 邢不行). Research use only; keep
  this attribution with any copy.
- Format: UTF-8; line 1 is the banner, line 2 the Chinese header (股票代码 code, 股票名称 name on
  that day, 交易日期 date, 开盘价/最高价/最低价/收盘价 open/high/low/close in CNY **unadjusted**,
  前收盘价 the exchange's previous close (differs from the last close on ex-rights days),
  成交量 volume in shares, 成交额 amount in CNY, 流通市值/总市值 free-float/total market cap in CNY).
  Suspended days are absent.
- `stock_basic.csv.gz`: the rows for these ten stocks from the public GitHub repository
  yzq129/quant-factor, `/stock_basic.csv` (a Tushare `stock_basic` export; research and learning
  use only).
"""

if __name__ == '__main__':
    main(Path(sys.argv[1]), Path(__file__).resolve().parent.parent/'quantnb'/'sample')
