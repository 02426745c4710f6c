"""The feature cache: invalidation by import, cached == uncached, concurrent and killed writers, damaged entries,
the fingerprint a run records, and the memory a load takes."""
import json, os, signal, subprocess, sys, textwrap
from pathlib import Path

import numpy as np, pandas as pd
import pytest

from quantnb.data import cache as qcache
from quantnb.data.cache import (CorruptEntry, cache_entries, clear_cache, data_digest, data_fingerprint, entry_name,
                                load_derived, load_feature_panel, panel_recipe)
from quantnb.data.datasets import SEGMENTS, load_datasets
from quantnb.data.db import StockDataLoader
from quantnb.data.importer import import_paths
from quantnb.data.universe import universe_slice_files

FILES = universe_slice_files()[:8]   # eight stocks of the bundled slice: quick, and enough to see one change
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def slice_db(tmp_path):
    "A fresh SQLite database holding eight stocks of the universe slice (tests here change it)."
    url = f'sqlite:///{tmp_path}/slice.sqlite'
    assert all(r.ok for r in import_paths(FILES, url))
    return url


def symbols_of(url):
    return StockDataLoader(url).list_symbols()


def add_bar(url, tmp_path, symbol, day='2022-01-04'):
    "Import one more bar for `symbol` (a copy of its last bar, a trading day later)."
    last = StockDataLoader(url).load_kline_data(symbol, adjust=None).iloc[-1]
    cols = ('open', 'high', 'low', 'close', 'volume', 'amount', 'float_market_cap', 'total_market_cap')
    path = tmp_path / f'bar_{symbol}_{day}.csv'
    pd.DataFrame([{'symbol': symbol, 'trade_date': day, 'pre_close': last['close'], **{c: last[c] for c in cols}}]
                 ).to_csv(path, index=False)
    assert all(r.ok for r in import_paths([path], url))


def entries(root):
    return sorted(p.name for p in (Path(root) / 'features').iterdir() if not p.name.startswith('.'))


def assert_same_bundle(a, b):
    np.testing.assert_array_equal(a.train.values.numpy(), b.train.values.numpy())
    np.testing.assert_array_equal(a.train.targets.numpy(), b.train.targets.numpy())
    for name in SEGMENTS: np.testing.assert_array_equal(a.segment(name).ends.numpy(), b.segment(name).ends.numpy())
    np.testing.assert_array_equal(a.close, b.close)
    np.testing.assert_array_equal(a.dates, b.dates)
    assert a.meta() == b.meta()


def test_an_import_invalidates_only_the_entries_holding_the_changed_stock(slice_db, tmp_path):
    root = tmp_path / 'cache'
    symbols = symbols_of(slice_db)
    changed, others = symbols[3], [s for s in symbols if s != symbols[3]]
    loader = StockDataLoader(slice_db)
    full = load_feature_panel(loader, symbols, feature_set='ta45', cache=root)
    part = load_feature_panel(loader, others, feature_set='ta45', cache=root)
    assert len(full.computed) == len(symbols) and part.computed == []   # the second took every row from the first
    before = data_fingerprint(loader, symbols)
    add_bar(slice_db, tmp_path, changed)
    after = data_fingerprint(loader, symbols)
    assert [s for s in symbols if after[s] != before[s]] == [changed]
    recipe = panel_recipe('ta45')
    assert entry_name(recipe, after) != full.path.name
    assert entry_name(recipe, {s: after[s] for s in others}) == part.path.name   # untouched by the import
    again = load_feature_panel(loader, others, feature_set='ta45', cache=root)
    assert again.path == part.path and again.computed == []
    renewed = load_feature_panel(loader, symbols, feature_set='ta45', cache=root)
    assert renewed.computed == [changed] and len(renewed) == len(full) + 1
    fresh = load_feature_panel(loader, symbols, feature_set='ta45', cache=False)
    np.testing.assert_array_equal(renewed.features, fresh.features)
    np.testing.assert_array_equal(renewed.close, fresh.close)
    assert not full.path.exists() and renewed.path.exists()   # the superseded entry of the same stocks is gone
    assert renewed.data_digest == data_digest(after) != full.data_digest


@pytest.mark.parametrize('options', [dict(), dict(normalization='robust', per_symbol=True),
                                     dict(task='classification', start_date='2019-06-01', end_date='2021-06-30')])
def test_cached_loads_equal_uncached_ones(slice_db, tmp_path, options):
    kw = dict(url=slice_db, feature_set='all', seq_len=40, horizon=5, **options)
    symbols = symbols_of(slice_db)
    first = load_datasets(symbols, cache=tmp_path / 'c', **kw)         # computes, stores panel and values
    second = load_datasets(symbols, cache=tmp_path / 'c', **kw)        # maps both
    fresh = load_datasets(symbols, cache=False, **kw)
    for b in (second, fresh): assert_same_bundle(first, b)
    info = cache_entries(tmp_path / 'c')
    assert len(info) == 1 and info.derived.tolist() == [1]
    other_split = load_datasets(symbols, cache=tmp_path / 'c', **{**kw, 'seq_len': 20})   # same panel, new values
    assert_same_bundle(other_split, load_datasets(symbols, cache=False, **{**kw, 'seq_len': 20}))
    assert cache_entries(tmp_path / 'c').derived.tolist() in ([1], [2])   # a new split stores its own values
    assert not list((tmp_path / 'c' / 'features').glob('.tmp-*'))


def test_damaged_entries_and_values_are_rebuilt_not_trusted(slice_db, tmp_path):
    root, symbols = tmp_path / 'cache', symbols_of(slice_db)
    kw = dict(url=slice_db, feature_set='basic11', seq_len=30, horizon=5, cache=root)
    reference = load_datasets(symbols, **{**kw, 'cache': False})
    load_datasets(symbols, **kw)
    entry = root / 'features' / entries(root)[0]
    values = next(entry.glob('values-*.npy'))

    with open(values, 'r+b') as f: f.seek(-64, 2); f.write(b'\x7f' * 16)      # damaged normalised values
    assert_same_bundle(load_datasets(symbols, **kw), reference)
    assert load_derived(qcache._open_entry(entry), values.stem) is not None   # stored again, sound

    for name in ('features', 'values'):                                          # damaged features: at first use
        files = [entry / 'features.npy'] if name == 'features' else list(entry.glob('values-*.npy'))
        if name == 'features':
            for f in entry.glob('values-*'): f.unlink()                          # so the features must be read
        with open(files[0], 'r+b') as f: f.seek(-200, 2); f.write(b'\x00\x11' * 20)
        assert_same_bundle(load_datasets(symbols, **kw), reference)
    panel = load_feature_panel(StockDataLoader(slice_db), symbols, feature_set='basic11', cache=root)
    assert panel.computed == []

    os.truncate(entry / 'close.npy', 100)                                        # a cut-off file
    with pytest.warns(UserWarning, match='damaged'):
        panel = load_feature_panel(StockDataLoader(slice_db), symbols, feature_set='basic11', cache=root)
    assert len(panel.computed) == len(symbols)
    (entry / 'manifest.json').write_text('{"format": 1, "symb')                  # a half-written manifest
    with pytest.warns(UserWarning, match='damaged'):
        assert_same_bundle(load_datasets(symbols, **kw), reference)

    panel = load_feature_panel(StockDataLoader(slice_db), symbols, feature_set='basic11', cache=root)
    with open(entry / 'features.npy', 'r+b') as f: f.seek(-8, 2); f.write(b'\xff' * 8)
    with pytest.raises(CorruptEntry, match='damaged'):
        panel.features                                                           # the late check, and the entry goes
    assert not entry.exists()


def test_a_directory_without_a_manifest_is_not_an_entry(slice_db, tmp_path):
    root, symbols = tmp_path / 'cache', symbols_of(slice_db)
    loader = StockDataLoader(slice_db)
    fp = data_fingerprint(loader, symbols)
    name = entry_name(panel_recipe('basic11'), fp)
    (root / 'features' / name).mkdir(parents=True)
    (root / 'features' / name / 'features.npy').write_bytes(b'half')           # as a partial copy would leave it
    panel = load_feature_panel(loader, symbols, feature_set='basic11', cache=root)
    assert len(panel.computed) == len(symbols) and (panel.path / 'manifest.json').exists()


KILLED_WRITER = textwrap.dedent('''
    import os, signal, sys
    from quantnb.data import cache
    real = cache._write_npy
    def write_then_die(path, *args):
        record = real(path, *args)
        if path.name == 'close.npy': os.kill(os.getpid(), signal.SIGKILL)   # killed halfway through the entry
        return record
    cache._write_npy = write_then_die
    from quantnb.data.db import StockDataLoader
    loader = StockDataLoader(sys.argv[1])
    cache.load_feature_panel(loader, loader.list_symbols(), feature_set='basic11', cache=sys.argv[2])
''')


def test_a_killed_writer_leaves_no_entry(slice_db, tmp_path):
    root = tmp_path / 'cache'
    r = subprocess.run([sys.executable, '-c', KILLED_WRITER, slice_db, str(root)], capture_output=True, text=True,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert entries(root) == [] and list((root / 'features').glob('.tmp-*'))   # only its temporary directory
    assert len(cache_entries(root)) == 0
    panel = load_feature_panel(StockDataLoader(slice_db), symbols_of(slice_db), feature_set='basic11', cache=root)
    assert len(panel.computed) == len(symbols_of(slice_db)) and len(entries(root)) == 1
    assert clear_cache(root) == 1 and not list((root / 'features').iterdir())


WRITER = textwrap.dedent('''
    import json, sys, time
    from quantnb.data.cache import load_feature_panel
    from quantnb.data.db import StockDataLoader
    loader = StockDataLoader(sys.argv[1])
    symbols = loader.list_symbols()
    while time.time() < float(sys.argv[3]): time.sleep(0.005)   # start together
    panel = load_feature_panel(loader, symbols, feature_set='basic11', cache=sys.argv[2])
    print(json.dumps({'entry': panel.path.name, 'computed': len(panel.computed),
                      'sum': float(abs(panel.features[panel.finite]).sum())}))
''')


def test_concurrent_writers_of_one_entry(slice_db, tmp_path):
    import time
    root, start = tmp_path / 'cache', time.time() + 8
    procs = [subprocess.Popen([sys.executable, '-c', WRITER, slice_db, str(root), str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
             for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len({r['entry'] for r in results}) == 1 and len({r['sum'] for r in results}) == 1
    assert entries(root) == [results[0]['entry']]
    assert not [p for p in (root / 'features').iterdir() if p.name.startswith('.')]   # no leftovers
    panel = load_feature_panel(StockDataLoader(slice_db), symbols_of(slice_db), feature_set='basic11', cache=root)
    assert panel.computed == []


def test_a_rename_race_lost_uses_the_winners_entry(slice_db, tmp_path):
    "Two writers of one entry, in one process: the second finds the first's entry in place and keeps it."
    root, loader = tmp_path / 'cache', StockDataLoader(slice_db)
    symbols = symbols_of(slice_db)
    fp = data_fingerprint(loader, symbols)
    panel = load_feature_panel(loader, symbols, feature_set='basic11', cache=False)
    recipe = panel_recipe('basic11')
    first = qcache._store_entry(panel, recipe, fp, root / 'features')
    stamp = (first / 'manifest.json').stat().st_mtime_ns
    assert qcache._store_entry(panel, recipe, fp, root / 'features') == first
    assert (first / 'manifest.json').stat().st_mtime_ns == stamp and entries(root) == [first.name]
    assert not [p for p in (root / 'features').iterdir() if p.name.startswith('.')]


def test_data_changing_during_a_build_is_not_stored(slice_db, tmp_path, monkeypatch):
    root, loader = tmp_path / 'cache', StockDataLoader(slice_db)
    calls = []
    real = qcache.data_fingerprint
    def moving(loader, symbols=None):
        fp = real(loader, symbols)
        calls.append(1)
        return fp if len(calls) == 1 else {**fp, symbols[0]: [9, 9, '2030-01-01']}   # an import ran meanwhile
    monkeypatch.setattr(qcache, 'data_fingerprint', moving)
    panel = load_feature_panel(loader, symbols_of(slice_db), feature_set='basic11', cache=root)
    assert panel.path is None and not (root / 'features').exists()


def test_the_fingerprint_is_the_databases_data_version(slice_db):
    from quantnb.data.db import fingerprint_digest
    loader = StockDataLoader(slice_db)
    symbols = symbols_of(slice_db)[:2]
    fp = data_fingerprint(loader, symbols)
    assert fp == {s: list(e) for s, e in loader.fingerprint(symbols).items()}
    assert all(e[0] >= 1 and e[1] > 500 for e in fp.values())
    assert data_digest(fp) == fingerprint_digest(fp)


def test_unknown_symbols_are_named_as_before(slice_db, tmp_path):
    from quantnb.data.db import UnknownSymbolError
    with pytest.raises(UnknownSymbolError, match="'999999.SH'"):
        load_datasets(['999999'], url=slice_db, cache=tmp_path / 'c')


def test_a_run_records_the_data_fingerprint_and_universe(slice_db, tmp_path):
    from quantnb.train.pipeline import TrainParams, TrainingRun
    symbols = symbols_of(slice_db)[:2]
    run = TrainingRun(TrainParams(model='gru', symbols=','.join(symbols), db_url=slice_db, epochs=1, seq_len=30,
                                  progress=False, run_name='fp', out_dir=str(tmp_path / 'out')))
    run.start()
    run.prepare_data()
    data = run.manager.load_config()['data']
    assert data['universe'] is None
    assert data['fingerprint'] == data_digest(data_fingerprint(StockDataLoader(slice_db), symbols))
    add_bar(slice_db, tmp_path, symbols[0])
    again = TrainingRun(TrainParams(model='gru', symbols=','.join(symbols), db_url=slice_db, epochs=1, seq_len=30,
                                    progress=False, run_name='fp2', out_dir=str(tmp_path / 'out')))
    again.start()
    again.prepare_data()
    assert again.manager.load_config()['data']['fingerprint'] != data['fingerprint']   # other bars, other digest


MEASURE = textwrap.dedent('''
    import sys, tracemalloc
    sys.path.insert(0, sys.argv[1])
    from _synthetic import as_panel, synthetic_universe
    from quantnb.data.datasets import build_datasets
    bars = as_panel(synthetic_universe(200, 1500))
    tracemalloc.start()
    bundle = build_datasets(bars, 'all', seq_len=30)
    peak = tracemalloc.get_traced_memory()[1]
    print(peak / bundle.train.values.numpy().nbytes)
''')


def test_building_datasets_takes_at_most_twice_the_feature_array(tmp_path):
    "Peak traced allocations of `build_datasets` (bars already loaded) over its final feature array's bytes."
    r = subprocess.run([sys.executable, '-c', MEASURE, str(ROOT / 'bench')], capture_output=True, text=True,
                       env={**os.environ, 'PYTHONPATH': str(ROOT), 'QUANTNB_HOME': str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    ratio = float(r.stdout.strip().splitlines()[-1])
    assert 1 <= ratio <= 2, ratio


def test_cache_cli_does_not_import_torch(tmp_path, slice_db):
    load_datasets(symbols_of(slice_db)[:2], url=slice_db, seq_len=30, cache=tmp_path / 'home' / 'cache')
    env = {**os.environ, 'QUANTNB_HOME': str(tmp_path / 'home')}
    quantnb = str(Path(sys.executable).parent / 'quantnb')
    r = subprocess.run([sys.executable, '-X', 'importtime', quantnb, 'cache', 'info'], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0 and '1 panel(s)' in r.stdout, r.stderr[-2000:]
    names = {line.rsplit('|', 1)[1].strip() for line in r.stderr.splitlines() if line.startswith('import time:')}
    assert 'quantnb.data.cache' in names and 'torch' not in names
    r = subprocess.run([quantnb, 'cache', 'clear'], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and 'removed 1 cached panel(s)' in r.stdout
